"""A master as a user would write one, configured by the JSON document in ``argv[1]``.

Every broker event is printed to stdout as one JSON line (flushed), so a test can follow what
the master saw. Workers can steer the master through ``worker_message``: ``{"ctl": ...}`` calls
the Broker API, ``{"ask": x}`` sends ``x`` back to the broker's workers, ``{"raise": 1}`` makes
the callback raise, ``{"exit": 1}`` raises ``SystemExit`` out of the master loop.

Fault injection for the tests: ``fail_forks`` makes the first N forks fail, ``stray_child``
forks a child that is not a worker before the master starts.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
from typing import Any

from prefork import Broker, Master, ReloadResult, WorkerExit, WorkerInfo


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"e": event, "t": time.monotonic(), **fields}), flush=True)


def info(w: WorkerInfo) -> dict[str, Any]:
    return {"type": w.type, "id": w.id, "pid": w.pid, "gen": w.generation}


def wire(broker: Broker) -> None:
    def on_exit(name: str) -> Any:
        def fn(x: WorkerExit) -> None:
            emit(
                name,
                type=x.type,
                id=x.id,
                pid=x.pid,
                gen=x.generation,
                code=x.code,
                signal=x.signal,
                uptime=x.uptime,
            )

        return fn

    def on_ready(w: WorkerInfo) -> None:
        emit("worker_ready", **info(w))

    def on_reload(name: str) -> Any:
        def fn(r: ReloadResult) -> None:
            emit(name, type=r.type, gen=r.generation, replaced=r.replaced, reason=r.reason)

        return fn

    def on_report(msg: Any, w: WorkerInfo) -> None:
        emit("worker_report", msg=msg, **info(w))

    def on_message(msg: Any, w: WorkerInfo) -> None:
        emit("worker_message", msg=msg, **info(w))
        if not isinstance(msg, dict):
            return
        if "ctl" in msg:
            control(broker, msg)
        if "ask" in msg:
            broker.send(msg["ask"])
        if "blast" in msg:
            for _ in range(msg["blast"]):
                broker.send("y" * msg["size"])
        if "sleep" in msg:  # a slow callback: the master is busy, the world goes on
            time.sleep(msg["sleep"])
        if "raise" in msg:
            raise RuntimeError("a user callback raised")
        if "exit" in msg:
            raise SystemExit(3)

    broker.on("worker_exit", on_exit("worker_exit"))
    broker.on("worker_crash", on_exit("worker_crash"))
    broker.on("worker_ready", on_ready)
    broker.on("worker_message", on_message)
    broker.on("worker_report", on_report)
    broker.on("reload_done", on_reload("reload_done"))
    broker.on("reload_failed", on_reload("reload_failed"))


def control(broker: Broker, msg: dict[str, Any]) -> None:
    ctl = msg["ctl"]
    if ctl == "scale":
        broker.scale(msg["n"])
    elif ctl == "reload":
        broker.reload()
    elif ctl == "drain":
        broker.drain()
    elif ctl == "resume":
        broker.resume()
    emit(
        "status",
        type=broker.type,
        workers=broker.workers,
        draining=broker.draining,
        recycle_rate=broker.recycle_rate,
        status=broker.status,
    )


def fail_forks(n: int) -> None:
    real_fork = os.fork
    left = [n]

    def fork() -> int:
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.EAGAIN, "injected fork failure")
        return real_fork()

    os.fork = fork


def main() -> int:
    config = json.loads(sys.argv[1])
    logging.basicConfig(
        level=logging.INFO,
        filename=config.get("log_file"),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    if config.get("stray_child"):  # a child that is not a worker; the test kills it
        stray = os.fork()
        if stray == 0:
            time.sleep(60)
            os._exit(0)
        emit("stray", pid=stray)
    if config.get("fail_forks"):
        fail_forks(config["fail_forks"])
    master = Master(**config.get("master", {}))
    for spec in config["brokers"]:
        wire(master.broker(**spec))
    emit("master", pid=os.getpid())
    try:
        code = master.run()
    except SystemExit:
        emit("master_raised")
        time.sleep(config.get("linger", 0))
        raise
    emit("master_exit", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
