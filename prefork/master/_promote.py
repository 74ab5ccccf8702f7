"""A worker forks the next generation's template from itself (``--refork-after``): the worker's
side of a refork; the decision is the supervisor's (``core/_refork.py``).

On a PROMOTE frame the worker makes a link (a SOCK_SEQPACKET socketpair, as the master makes
for a template it forks), runs ``before_fork`` and forks twice, as a template forks a worker
(``_template.fork_adopted``): the new template is the master's child, never the worker's. It
answers PROMOTED with the template's pid and passes the master its end of the link (an fd,
SCM_RIGHTS), and goes on serving: nothing waits on the promotion.

The template starts as a copy of a running worker: inside its event loop's callback, holding
its connections, its channel, its signal handlers. So it gives back what is the worker's
(every socket but the broker's listening ones and its link is replaced by /dev/null, so that a
client's connection ends when the worker closes it, and no fd number an old object still
names is reused), lets go of the running loop (its workers run loops of their own), and
serves forks as any template does (``_template.serve_forks``: ``gc.freeze()`` again, then
ready). Fork safety beyond that is the app's (``before_fork``/``after_fork``): a worker that
runs other threads answers that it is not fork safe (a fork keeps only the calling thread: a
lock another thread holds stays locked forever in the copy), and is not asked again.

Rejected: the worker itself becoming the template (pitchfork's first design: it must stop
serving and drain first, and a request could fail on the way); the master passing the link to
the worker (its channel is read by the event loop's transport, which drops passed fds).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import stat
import threading
from typing import Any

from prefork.master import _child, _process, _template
from prefork.master._signals import reset_in_child
from prefork.worker import Worker


def fork_template(
    spec: _child.WorkerSpec, cls: type[Worker], generation: int
) -> tuple[dict[str, Any], socket.socket | None]:
    """In a worker: fork the template of ``generation`` from this process. Returns the
    PROMOTED frame's body (the template's pid, or why there is none) and the master's end of
    the template's link (None with no template)."""
    said: dict[str, Any] = {"generation": generation}
    if (threads := threading.active_count()) > 1:
        said["error"] = f"not fork safe: {threads} threads run (a fork keeps only one)"
        return said, None
    master = os.getppid()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        cls.before_fork(spec.options)
        pid, middle = _template.fork_adopted(
            lambda parent: _promoted(spec, cls, generation, theirs, ours, parent, master)
        )
    except Exception as exc:
        ours.close()
        said["error"] = f"{type(exc).__name__}: {exc}"
        return said, None
    finally:
        theirs.close()
    os.waitpid(middle, 0)  # by then the template is the master's child
    said["pid"] = pid
    return said, ours


def _promoted(
    spec: _child.WorkerSpec,
    cls: type[Worker],
    generation: int,
    link: socket.socket,
    ours: socket.socket,
    parent: int,
    master: int,
) -> int:
    ours.close()
    reset_in_child()
    asyncio.events._set_running_loop(None)  # the worker's: its workers start loops of their own
    give_back([link.fileno(), *(s.fileno() for s in spec.sockets)])
    prefix = spec.name or "prefork"
    _process.set_title(
        f"{prefix}: {spec.broker} template gen {generation} (refork)", f"{prefix}:{spec.broker}"
    )
    _template.wait_for_parent(parent, master)
    _process.die_with_parent(master)

    def worker_spec(
        _cls: type[Worker], worker_id: int, channel: socket.socket
    ) -> _child.WorkerSpec:
        return dataclasses.replace(
            spec, worker_id=worker_id, generation=generation, channel=channel, adopted=None
        )

    template = _template.TemplateSpec(
        broker=spec.broker,
        generation=generation,
        worker=cls,
        options=spec.options,
        link=link,
        master_pid=master,
        worker_spec=worker_spec,
        identity=spec.identity,
        name=spec.name,
    )
    return _template.serve_forks(template, cls)


def give_back(keep: list[int], fd_dir: str = "/proc/self/fd") -> None:
    """Put /dev/null in place of every socket of this process but ``keep``: the worker's
    connections and channel, which must end when the worker closes them. The numbers stay
    taken (objects of the worker still name them: a closed number would be reused)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir(fd_dir):
            fd = int(name)
            with contextlib.suppress(OSError):  # the listing's own fd, closed by now
                if fd not in keep and fd != null and stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
    finally:
        os.close(null)
