"""What ``prefork serve --reload`` decides: which changed paths count, and when the reload
starts. Pure: paths are strings, time comes in as ``now``; the watcher process
(``master/_watch.py``) does the watching.

The patterns are uvicorn's (``--reload-include``, ``--reload-exclude``, their defaults, and
how a pattern of one kind drops the same default of the other), matched as ``PurePath.match``
matches (from the right; ``*`` stays within one name). One difference, on purpose: an exclude
pattern also excludes everything below a directory it matches (below the watched directory),
so ``.*`` keeps ``.git/`` and ``.venv/`` out and ``--reload-exclude build`` a build tree;
uvicorn matches file names only and reloads when a file in ``.venv`` changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

#: uvicorn's defaults.
DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")
_GLOB = frozenset("*?[")


def patterns(
    includes: Iterable[str], excludes: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The include and exclude patterns in effect, as uvicorn makes them: the defaults and the
    user's, a default the user names as the other kind left out, and a pattern given as both
    excluded."""
    given_in, given_ex = list(dict.fromkeys(includes)), list(dict.fromkeys(excludes))
    inc = [p for p in (*DEFAULT_INCLUDES, *given_in) if p not in given_ex]
    ex = [p for p in DEFAULT_EXCLUDES if p not in given_in] + given_ex
    return tuple(dict.fromkeys(inc)), tuple(dict.fromkeys(ex))


@dataclass(frozen=True, slots=True)
class PathFilter:
    """Whether a change to a path counts: ``PathFilter(roots, includes, excludes)(path)``.

    ``roots`` are the watched directories (absolute); what is above them is never matched
    against an exclude (a project under ``~/.work`` is still watched).
    """

    roots: tuple[str, ...]
    includes: tuple[str, ...]
    excludes: tuple[str, ...]

    def __call__(self, path: str) -> bool:
        p = PurePosixPath(path)
        if not any(p.match(pattern) for pattern in self.includes):
            return False
        if any(not _GLOB & set(pattern) and p.match(pattern) for pattern in self.includes):
            return True  # named exactly (uvicorn's rule): no exclude applies
        return not any(d.match(pattern) for d in self._below_root(p) for pattern in self.excludes)

    def prunes(self, directory: str) -> bool:
        """Whether nothing below ``directory`` can count (an exclude matches it, or a
        directory above it below its root), so a walk of the tree need not enter it. With a
        pattern included by its exact name (which no exclude applies to), nothing is pruned."""
        if any(not _GLOB & set(pattern) for pattern in self.includes):
            return False
        p = PurePosixPath(directory)
        return any(d.match(pattern) for d in self._below_root(p) for pattern in self.excludes)

    def _below_root(self, p: PurePosixPath) -> list[PurePosixPath]:
        """``p`` and the directories above it, up to (not with) the watched root it is under."""
        roots = [r for r in map(PurePosixPath, self.roots) if p.is_relative_to(r) and p != r]
        depth = len(max(roots, key=lambda r: len(r.parts)).parts) if roots else 1
        return [p, *p.parents[: len(p.parts) - depth - 1]]


class Debounce:
    """Changes in, one reload out: the reload starts once no change has come for ``delay``
    seconds (a save that writes several files, or writes one twice, reloads once).

    ``changed(paths, now)`` returns the new ``deadline``; ``fire(now)`` returns the paths
    changed since the last reload once the deadline has passed (sorted), else None.
    """

    __slots__ = ("deadline", "delay", "paths")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.deadline: float | None = None
        self.paths: set[str] = set()

    def changed(self, paths: Iterable[str], now: float) -> float:
        self.paths.update(paths)
        self.deadline = now + self.delay
        return self.deadline

    def fire(self, now: float) -> list[str] | None:
        if self.deadline is None or now < self.deadline:
            return None
        paths, self.paths, self.deadline = sorted(self.paths), set(), None
        return paths
