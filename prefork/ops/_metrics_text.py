"""The Prometheus text exposition format 0.0.4, one value at a time, for ``_metrics``.

Two sides of the same rules: what a worker may send (names, label names and values, numbers,
histogram bounds and counts: each check gives the clean value or a one-line reason) and the
lines that print a series (escaped, with numbers that Prometheus reads). Pure functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Final

MAX_LABELS: Final = 16
MAX_TEXT: Final = 200  # characters in a metric name, a label name or value, a help text
#: Bytes of a worker series' labels as printed (escaped, ``broker`` and quotes included):
#: every line of the series repeats them, a histogram's 35 times.
MAX_LABEL_TEXT: Final = 1024
MAX_BUCKETS: Final = 32
# A larger increase of one bucket in one report is no real count (and floats lose exactness).
MAX_COUNT: Final = 2**53
#: A histogram series' total count: its lines have a known widest form (19 digits).
MAX_TOTAL_COUNT: Final = 2**63 - 1
_VALUE_WIDTH: Final = len(repr(-1.7976931348623157e308))  # the widest sample value printed
_COUNT_WIDTH: Final = len(str(MAX_TOTAL_COUNT))

Key = tuple[tuple[str, str], ...]  # a series' labels, sorted: the dict key of the series

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# -- checks of what a worker sent ------------------------------------------------------------


def finite(value: object) -> float | None:
    """``value`` as a finite float, or None. A bool is not a number here."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # an int beyond the largest float
            return None
    return None


def good_name(name: str) -> bool:
    return len(name) <= MAX_TEXT and bool(_NAME.fullmatch(name)) and not name.startswith("__")


def label_refusal(pairs: Iterable[tuple[str, str]], reserved: frozenset[str]) -> str | None:
    """Why these label pairs cannot name a series (None: they can)."""
    for name, value in pairs:
        if len(name) > MAX_TEXT or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            return f"has a bad label name {describe(name)}"
        if name in reserved:
            return f"has the reserved label name {name!r}"
        if len(value) > MAX_TEXT or not is_utf8(value):
            return f"has a bad value for the label {name!r} (UTF-8, at most {MAX_TEXT} characters)"
    return None


def bounds_of(buckets: object) -> list[float] | str:
    """A histogram's upper bounds: finite, strictly increasing, at most MAX_BUCKETS."""
    if type(buckets) is not list or len(buckets) > MAX_BUCKETS:
        return f"needs 'buckets': a list of at most {MAX_BUCKETS} upper bounds"
    bounds: list[float] = []
    for bucket in buckets:
        bound = finite(bucket)
        if bound is None:
            return f"has a bucket bound that is not a finite number: {describe(bucket)}"
        if bounds and bound <= bounds[-1]:
            return "has bucket bounds that do not strictly increase"
        bounds.append(bound)
    return bounds


def counts_of(counts: object, expected: int) -> list[int] | str:
    """``expected`` whole numbers from 0 to MAX_COUNT (a float such as 4.0 is taken as 4)."""
    if type(counts) is not list or len(counts) != expected:
        return f"needs 'counts': a list of {expected} numbers (one per bound, then one above)"
    whole: list[int] = []
    for count in counts:
        if type(count) is float and count.is_integer():
            count = int(count)
        if type(count) is not int or not 0 <= count <= MAX_COUNT:
            return f"has a count that is not a whole number from 0 to 2**53: {describe(count)}"
        whole.append(count)
    return whole


def help_and_key(sample: dict[Any, Any], broker: str) -> tuple[Key, str] | str:
    """A sample's help text, and its series key: its labels and ``broker``, sorted (so the
    same labels in any order are the same series). Label names are checked apart, only for a
    new series: a key already stored was checked when it was stored."""
    help = sample.get("help", "")
    if type(help) is not str or len(help) > MAX_TEXT or not is_utf8(help):
        return f"has a bad 'help' (it must be UTF-8 text of at most {MAX_TEXT} characters)"
    labels = sample.get("labels")
    if labels is None:
        return (("broker", broker),), help
    if type(labels) is not dict:
        return f"has 'labels' that are not an object: {describe(labels)}"
    if len(labels) > MAX_LABELS:
        return f"has {len(labels)} labels (at most {MAX_LABELS})"
    for label, value in labels.items():
        if type(label) is not str or type(value) is not str:
            return f"has a label that is not text: {describe(label)}={describe(value)}"
    return tuple(sorted([*labels.items(), ("broker", broker)])), help


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes (JSON can carry lone surrogates, which do not)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def describe(value: object) -> str:
    """A short one-line picture of what a worker sent, for a refusal."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**20 else "a huge integer"
    kinds: dict[type, str] = {dict: "an object", list: "a list"}
    return kinds.get(type(value)) or f"a {type(value).__name__}"


# -- the lines --------------------------------------------------------------------------------


def label_text(key: Key) -> str:
    """The label pairs as printed between the braces, values escaped."""
    return ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in key)


def header(out: list[str], name: str, help: str, kind: str) -> None:
    if help:
        out.append(f"# HELP {name} {_escape_help(help)}")
    out.append(f"# TYPE {name} {kind}")


def sample_line(name: str, labels: str, value: float) -> str:
    return f"{name}{_braced(labels)} {_number(value)}"


def histogram_lines(
    out: list[str], name: str, labels: str, bounds: list[float], counts: list[int], total: float
) -> None:
    """The cumulative ``_bucket`` lines (+Inf last), then ``_sum`` and ``_count``;
    ``counts`` are per bucket, the last one above the largest bound."""
    before_le = labels + "," if labels else ""
    cumulative = 0
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        out.append(f'{name}_bucket{{{before_le}le="{bound!r}"}} {cumulative}')
    cumulative += counts[-1]
    out.append(f'{name}_bucket{{{before_le}le="+Inf"}} {cumulative}')
    out.append(f"{name}_sum{_braced(labels)} {_number(total)}")
    out.append(f"{name}_count{_braced(labels)} {cumulative}")


def series_size(name: str, labels: str, bounds: list[float] | None) -> int:
    """The most bytes the lines of one series take, its numbers at their widest: one line
    for a counter or gauge; for a histogram (``bounds``) a line per bound, +Inf, _sum and
    _count. What the store charges a series against its limit of bytes per scrape."""
    text = len(labels.encode())
    braced = text + 2 if labels else 0
    if bounds is None:
        return len(name) + braced + 1 + _VALUE_WIDTH + 1
    # name_bucket{labels,le="bound"} count
    bucket = len(name) + len('_bucket{le=""} ') + text + (1 if labels else 0) + _COUNT_WIDTH + 1
    lines = sum(bucket + len(repr(bound)) for bound in bounds) + bucket + len("+Inf")
    lines += len(name) + len("_sum ") + braced + _VALUE_WIDTH + 1
    return lines + len(name) + len("_count ") + braced + _COUNT_WIDTH + 1


def header_size(name: str, help: str, kind: str) -> int:
    """The bytes of a family's ``# HELP`` and ``# TYPE`` lines."""
    out: list[str] = []
    header(out, name, help, kind)
    return sum(len(line.encode()) + 1 for line in out)


def _braced(labels: str) -> str:
    return "{" + labels + "}" if labels else ""


def _number(value: float) -> str:
    """A sample value as Prometheus (Go's ParseFloat) reads it; whole numbers without .0."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label_value(text: str) -> str:
    return text.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
