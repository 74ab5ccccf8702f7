"""What a user is shown of an exception: the frames of their own code, never prefork's.

A missing app attribute used to end in fifteen lines of prefork's and importlib's frames, which
say nothing about the user's mistake. Here an exception prefork raised itself (the app cannot
be found, lifespan startup failed) is its message alone, which says what is wrong and what to
do; an exception from the user's code keeps only the user's frames (their libraries' too). A
chain without a single frame of the user's is a bug of prefork's, printed whole.
"""

from __future__ import annotations

import importlib
import os
import sysconfig
import traceback

#: Frames from these files are prefork's or the import machinery's, not the user's.
_NOT_THE_USERS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # prefork/
    os.path.dirname(importlib.__file__) + os.sep,
    "<frozen importlib.",
)
#: The standard library's and installed packages' files: frames of the user's, not their code.
_LIBRARIES = tuple(
    os.path.join(sysconfig.get_paths()[name], "") for name in ("stdlib", "purelib", "platlib")
)
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
#: The longest one-line summary (an exception's message may be a page).
MAX_LINE = 300


def users_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of ``exc``'s traceback that are the user's, outermost first."""
    frames = traceback.extract_tb(exc.__traceback__)
    return [f for f in frames if not f.filename.startswith(_NOT_THE_USERS)]


def _the_users(exc: BaseException) -> bool:
    """``exc`` has a frame of the user's, or is a syntax error in one of the user's files."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return not exc.filename.startswith(_NOT_THE_USERS)
    return bool(users_frames(exc))


def prefork_raised(exc: BaseException) -> bool:
    """``exc`` is one of prefork's own exceptions (its message is written for the user)."""
    return type(exc).__module__.partition(".")[0] == "prefork"


def _chain(exc: BaseException) -> list[tuple[BaseException, str]]:
    """``exc``'s chain, oldest first, each with the line that leads to the next."""
    out: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    link = ""
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    return out[::-1]


def user_traceback(exc: BaseException) -> str:
    """``exc`` as ``traceback`` prints it, each exception of its chain with the user's frames
    only; one of prefork's own without a frame of the user's is its message alone."""
    chain = _chain(exc)
    if not any(_the_users(e) or prefork_raised(e) for e, _ in chain):
        return "".join(traceback.format_exception(exc)).rstrip()  # prefork's bug: all of it
    parts: list[str] = []
    for e, link in chain:
        frames = users_frames(e)
        if frames:
            parts += ["Traceback (most recent call last):\n"]
            parts += traceback.StackSummary.from_list(frames).format()
        if prefork_raised(e) and not frames:
            parts.append(f"{e}\n")
        else:
            parts += traceback.format_exception_only(e)
        parts.append(link)
    return "".join(parts).rstrip()


def one_line(exc: BaseException) -> str:
    """``exc`` in one line: one of prefork's own is its message; the user's says its type,
    its message and where it was raised (in the user's own code when it went through it)."""
    if prefork_raised(exc) and not users_frames(exc):
        text = str(exc)
    else:
        name = type(exc).__qualname__
        if type(exc).__module__ != "builtins":
            name = f"{type(exc).__module__}.{name}"
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        text = f"{name}: {message}" if message else name
        if isinstance(exc, SyntaxError):
            where = (exc.filename, exc.lineno)
        else:  # the innermost frame of the user's own code, else of a library's
            frames = users_frames(exc)
            own = [f for f in frames if not f.filename.startswith(_LIBRARIES)] or frames
            where = (own[-1].filename, own[-1].lineno) if own else (None, None)
        if where[0]:
            text += f" ({where[0]}, line {where[1]})"
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."
