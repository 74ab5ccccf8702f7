"""``--hdr-log FILE``: HdrHistogram's interval log, one line per second of the run, for
HdrHistogram's own tools (HistogramLogProcessor, HdrHistogram's plotter, Python's
``hdrh.log.HistogramLogReader``)::

    #[Histogram log format version 1.3]
    #[StartTime: 1796550014.909 (seconds since epoch), 2026-12-06T09:40:14.909+00:00]
    #[Values in microseconds; Interval_Max in milliseconds]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    0.000,1.000,6.031,HISTFAAAA...

Each line is a second's latencies over every worker (``_hdr``'s encoding, values in
microseconds), its start relative to StartTime; the lines add up to the run's whole histogram
(the last one holds what the workers counted after their last whole second). The log is
written as the run goes (one flush a second): a long run makes a long file, never a large
memory.
"""

from __future__ import annotations

import datetime
from typing import IO

from prefork.load._histogram import Histogram


class HdrLog:
    """Writes the interval log to ``out`` (an open text file), from ``start`` (unix seconds)."""

    def __init__(self, out: IO[str], start: float) -> None:
        self.out = out
        when = datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat(
            timespec="milliseconds"
        )
        out.write(
            "#[Histogram log format version 1.3]\n"
            f"#[StartTime: {start:.3f} (seconds since epoch), {when}]\n"
            "#[Values in microseconds; Interval_Max in milliseconds]\n"
            '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n'
        )
        out.flush()

    def interval(self, offset: float, length: float, latency: Histogram) -> None:
        """One interval: ``offset`` seconds after the start, ``length`` seconds long."""
        self.out.write(f"{offset:.3f},{length:.3f},{latency.max / 1000:.3f},{latency.encode()}\n")
        self.out.flush()
