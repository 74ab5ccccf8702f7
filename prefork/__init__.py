"""prefork: a socket-sharing pre-fork server toolkit.

A master binds the listening sockets and forks workers that inherit them; it keeps the right
number of each worker type alive, replaces them without dropping capacity, and never dies
because a worker did.
"""

from prefork.core._options import ConfigError
from prefork.core._payloads import EVENTS, BrokerStatus, ReloadResult, WorkerExit, WorkerInfo
from prefork.core._version import VERSION
from prefork.master._broker import Broker
from prefork.master._loop import Master
from prefork.worker import Worker

__all__ = [
    "EVENTS",
    "Broker",
    "BrokerStatus",
    "ConfigError",
    "Master",
    "ReloadResult",
    "Worker",
    "WorkerExit",
    "WorkerInfo",
]
__version__ = VERSION
