"""What --reload decides, without a file system: which paths count (uvicorn's patterns and
defaults) and when a burst of changes becomes one reload (a fake clock)."""

from __future__ import annotations

import pytest

from prefork.core._reload import DEFAULT_EXCLUDES, Debounce, PathFilter, patterns

ROOT = "/home/me/.work/app"  # a watched directory under a hidden one is still watched


def accepts(*, includes: tuple[str, ...] = (), excludes: tuple[str, ...] = ()) -> PathFilter:
    inc, ex = patterns(includes, excludes)
    return PathFilter((ROOT,), inc, ex)


def test_the_defaults_are_uvicorns() -> None:
    assert patterns((), ()) == (("*.py",), (".*", ".py[cod]", ".sw.*", "~*"))


def test_a_pattern_of_one_kind_drops_the_same_default_of_the_other() -> None:
    assert patterns((".*", "*.html"), ()) == (("*.py", ".*", "*.html"), DEFAULT_EXCLUDES[1:])
    assert patterns((), ("*.py",)) == ((), (*DEFAULT_EXCLUDES, "*.py"))
    # Given as both: excluded. Repeats count once.
    assert patterns(("*.txt", "*.txt"), ("*.txt",)) == (("*.py",), (*DEFAULT_EXCLUDES, "*.txt"))


@pytest.mark.parametrize(
    ("path", "counts"),
    [
        (f"{ROOT}/main.py", True),
        (f"{ROOT}/pkg/deep/views.py", True),
        (f"{ROOT}/notes.txt", False),  # not included
        (f"{ROOT}/main.pyc", False),
        (f"{ROOT}/.hidden.py", False),  # .*
        (f"{ROOT}/~main.py", False),  # ~*
        (f"{ROOT}/.git/hooks/pre-commit.py", False),  # below a directory that .* matches
        (f"{ROOT}/.venv/lib/python3.11/site.py", False),
        (f"{ROOT}/pkg/.cache/x.py", False),
        (ROOT, False),  # the watched directory itself
        ("/elsewhere/x.py", True),  # not under a root: its own name decides
        ("/elsewhere/.x/y.py", False),
    ],
)
def test_which_paths_count_by_default(path: str, counts: bool) -> None:
    assert accepts()(path) is counts


def test_includes_add_to_py_and_excludes_take_directories_by_name_or_path() -> None:
    only = accepts(includes=("*.html", "templates/*.txt"), excludes=("build", "src/gen"))
    assert only(f"{ROOT}/templates/index.html")
    assert only(f"{ROOT}/templates/mail.txt") and not only(f"{ROOT}/mail.txt")
    assert only(f"{ROOT}/app.py")
    assert not only(f"{ROOT}/build/lib/app.py")
    assert not only(f"{ROOT}/pkg/build/x.html")  # a name matches at any depth
    assert not only(f"{ROOT}/src/gen/models.py") and only(f"{ROOT}/gen/models.py")
    assert not accepts(excludes=(f"{ROOT}/src",))(f"{ROOT}/src/a.py")  # an absolute path


def test_a_file_named_exactly_is_watched_whatever_the_excludes() -> None:
    named = accepts(includes=(".env", "settings.toml"), excludes=("conf",))
    assert named(f"{ROOT}/.env")  # .* excludes it by default; naming it wins (uvicorn)
    assert named(f"{ROOT}/conf/settings.toml")
    assert not named(f"{ROOT}/conf/app.py")


def test_excluding_py_leaves_only_what_is_included() -> None:
    html = accepts(includes=("*.html",), excludes=("*.py",))
    assert html(f"{ROOT}/a.html") and not html(f"{ROOT}/a.py")


def test_the_deepest_root_a_path_is_under_bounds_the_excludes() -> None:
    nested = PathFilter(("/srv", "/srv/.app"), ("*.py",), (".*",))
    assert nested("/srv/.app/main.py")  # under /srv/.app: .app is not looked at
    assert not nested("/srv/.other/main.py")


def test_a_walk_prunes_excluded_directories_unless_a_name_is_included_exactly() -> None:
    default = accepts()
    assert default.prunes(f"{ROOT}/.git") and default.prunes(f"{ROOT}/.venv/lib")
    assert not default.prunes(f"{ROOT}/pkg") and default.prunes(f"{ROOT}/pkg/.hidden/x")
    build = accepts(excludes=("build",))
    assert build.prunes(f"{ROOT}/build") and build.prunes(f"{ROOT}/build/lib")
    named = accepts(includes=("settings.toml",), excludes=("conf",))
    assert not named.prunes(f"{ROOT}/conf")  # conf/settings.toml counts (named exactly)


def test_a_burst_of_changes_is_one_reload_once_quiet_for_the_delay() -> None:
    d = Debounce(0.25)
    assert d.fire(0.0) is None and d.deadline is None
    assert d.changed(["/a/x.py"], 1.0) == 1.25
    assert d.fire(1.2) is None
    assert d.changed(["/a/y.py", "/a/x.py"], 1.2) == 1.45  # a later change pushes it back
    assert d.fire(1.3) is None
    assert d.fire(1.45) == ["/a/x.py", "/a/y.py"]
    assert d.fire(2.0) is None and d.deadline is None and not d.paths  # fired once


def test_no_delay_fires_at_the_change() -> None:
    d = Debounce(0.0)
    d.changed(["/a/x.py"], 5.0)
    assert d.fire(5.0) == ["/a/x.py"]
