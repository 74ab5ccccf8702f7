"""``prefork load``: a pre-forked HTTP load generator built on prefork's public API.

A master runs a broker of ``LoadWorker`` processes that hold no listening socket: each drives
its share of the connections (and of ``--rate``) and reports to the master every second; the
master merges the reports (counts, statuses, errors, a latency histogram that merges exactly)
into one live line a second and a summary at the end.

It may import ``master`` (it runs one), ``core`` and the public ``worker``.
"""

from prefork.load._config import LoadConfig
from prefork.load._histogram import Histogram
from prefork.load._tally import Tally

__all__ = ["Histogram", "LoadConfig", "Tally"]
