"""One WSGI request: a ``Cycle`` whose app runs in a thread of the worker's pool.

The connection drives a ``WSGICycle`` exactly as it drives an ASGI ``Cycle`` (its events come
from the event loop: ``body_received``, ``disconnect``, ...), and the response goes out through
the same framing (``Cycle._write_body``). What differs is who waits for what:

- The app's thread reads the body with ``take_body``: what has arrived is handed over at once
  (a small body read whole costs no round trip to the loop); only when it must wait does the
  thread ask the loop (``_want_body``) to resume reading and send ``100 Continue``, then block
  on the cycle's condition until the loop feeds it.
- The app's thread hands each response chunk to the loop with one
  ``loop.call_soon_threadsafe``; the last chunk goes with the end of the response and the end
  of the request (a one-chunk response costs ONE call: head, body and completion together).
- Bounded: at most one chunk is in flight. Before handing over the next one, the thread waits
  until the loop has written the previous one and the transport is not paused (the client
  reads); a client that stops reading is aborted at ``--body-timeout`` (the connection's write
  deadline), which releases the thread (``ClientDisconnected``), and the iterable is closed.

The response rules (PEP 3333, checked in the thread where the app can see its error):
``start_response`` takes a status ``"NNN reason"`` and ``str`` headers (checked as ASGI's, no CR
or LF); called again it needs ``exc_info``, which replaces the response not sent yet or is
re-raised once the head was sent. The head goes with the first non-empty chunk (or the end).
An app that raises before that gets a 500, after it a closed connection; the iterable's
``close()`` is called whatever happened, the client gone or not.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from prefork.http._asgi import ClientDisconnected, Cycle
from prefork.http._flow import BODY_BUFFER
from prefork.http._framing import checked_header
from prefork.http._wsgi_environ import Environ, build_environ
from prefork.http._wsgi_input import WSGIInput

logger = logging.getLogger("prefork.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: A reason phrase (RFC 9112 section 4): tab, space, visible latin-1 characters.
_REASON = re.compile("[\t\x20-\x7e\x80-\xff]*")
#: What the loop is handed to write the head: ((code, reason), header fields).
Head = tuple[tuple[int, bytes], list[tuple[bytes, bytes]]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


def parse_status(status: object) -> tuple[int, bytes]:
    """The code and reason of a WSGI status line (``"200 OK"``: ``(200, b"OK")``, the reason
    sent as the app gave it, as gunicorn does); ``ValueError``/``TypeError`` if it is not three
    digits, a space and a latin-1 reason without control characters (CR or LF would split the
    response)."""
    if type(status) is not str:
        raise TypeError(f"WSGI status must be a str, got {type(status).__name__}")
    code, space, reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit() or not space or not _REASON.fullmatch(reason):
        raise ValueError(f"WSGI status must be 'NNN reason', got {status!r}")
    return int(code), reason.encode("latin-1")


def checked_headers(headers: object) -> list[tuple[bytes, bytes]]:
    """A WSGI header list as the framing takes it (names as the app gave them, which go out
    so); ``TypeError``/``ValueError`` for anything but a list of (str, str) valid fields."""
    if type(headers) is not list:
        raise TypeError(f"WSGI headers must be a list, got {type(headers).__name__}")
    fields = []
    for field in headers:
        if type(field) is not tuple or len(field) != 2:
            raise TypeError(f"a WSGI header must be a (name, value) tuple, got {field!r}")
        name, value = field
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"WSGI header names and values must be str, got {field!r}")
        given = name.encode("latin-1")
        fields.append((given, checked_header(given, value.encode("latin-1"))[1]))
    return fields


class WSGICycle(Cycle):
    """A ``Cycle`` for a WSGI app: the connection's events on the loop, the app in a thread."""

    __slots__ = (
        "_cond",
        "_deferred",
        "_error",
        "_handed",
        "_head_sent",
        "_in_flight",
        "_on_done",
        "_response",
        "ended",
        "since",
        "stuck",
        "waiting",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cond = threading.Condition(threading.Lock())
        self._in_flight = False  # a chunk handed to the loop and not written (or drained) yet
        # What start_response was given: status, headers, Content-Length (-1: none).
        self._response: tuple[tuple[int, bytes], list[tuple[bytes, bytes]], int] | None = None
        self._handed = 0  # body bytes handed to the loop
        self._head_sent = False
        self._error: BaseException | None = None
        self._on_done: Callable[[], None]  # set by ``begin``
        self._deferred: Callable[[WSGICycle], None] | None = None  # ``begin``'s submit
        self.ended = False  # the app's thread is done with the request
        self.stuck = False  # the pool gave up on the app's thread (``--timeout``)
        # For the pool's --timeout: when the app's own time last started counting, and
        # whether the thread waits for the client now (bounded by --body-timeout instead).
        self.since = 0.0
        self.waiting = False

    def begin(self, submit: Callable[[WSGICycle], None], done: Callable[[], None]) -> None:
        """Have ``submit`` queue the app for a thread (on the loop), and ``done`` called when
        the thread is through with it (or the client left before it was queued).

        The app is queued once its body is whole, or ``BODY_BUFFER`` of it is here (where the
        connection stops reading), or at once when the client waits for ``100 Continue``: so
        a client sending its body slowly holds no thread while the first 64 KiB arrive (one
        byte a minute would otherwise hold one for as long as it likes).
        """
        self._on_done = done
        if not self.more_body or self.expect_continue or self.body_size >= BODY_BUFFER:
            submit(self)
        else:
            self._deferred = submit

    def _submit_deferred(self) -> None:
        submit = self._deferred
        if submit is not None:
            self._deferred = None
            submit(self)

    # -- events from the connection (on the loop) ------------------------------------------

    def body_received(self, data: bytes) -> None:
        with self._cond:
            self.body.append(data)
            self.body_size += len(data)
            self._cond.notify()
        if self.body_size >= BODY_BUFFER:
            self._submit_deferred()

    def body_complete(self) -> None:
        with self._cond:
            self.more_body = False
            self._cond.notify()
        self._submit_deferred()

    def drop_body(self) -> None:
        with self._cond:
            self.body.clear()
            self.body_size = 0

    def disconnect(self) -> None:
        with self._cond:
            if self.gone:
                return
            self.gone = self.disconnected = True
            self._cond.notify()
        if self._deferred is not None:  # the app never started: nothing for a thread to do
            self._deferred = None
            self._on_done()

    def peer_closed(self) -> None:
        self.disconnected = True  # the thread reads the body to its end all the same

    # -- the request body (in the app's thread) --------------------------------------------

    def take_body(self) -> bytes:
        """The body received since the last call, waiting for some; ``b""`` at its end.
        Raises ``ClientDisconnected`` if the client leaves before the body ends."""
        with self._cond:
            while not self.body:
                if not self.more_body:
                    return b""
                if self.gone:
                    raise ClientDisconnected("the client left before the request body ended")
                self.post(self._want_body)
                self.waiting = True
                self._cond.wait()
                self.waiting = False
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.body.clear()
            self.body_size = 0
            paused = self._flow.read_paused
        if paused:  # the connection stopped reading at BODY_BUFFER: read on
            self.post(self._on_body_consumed)
        return body

    def _want_body(self) -> None:
        """The app waits for body bytes (on the loop): say ``100 Continue``, read on."""
        if self.expect_continue:
            self.expect_continue = False
            if self.framing is None and not self._transport.is_closing():
                self._transport.write(_CONTINUE)
                self._stats.sent += len(_CONTINUE)
        self._on_body_consumed()

    # -- the response (in the app's thread) ------------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        """PEP 3333's ``start_response``: returns the ``write`` callable."""
        if exc_info is not None:
            try:
                if self._head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no cycle through the traceback (PEP 3333)
        elif self._response is not None:
            raise AssertionError("start_response called a second time without exc_info")
        fields = checked_headers(headers)
        length = -1
        for name, value in fields:
            if name.lower() == b"content-length" and value.isdigit():
                length = int(value)
        self._response = (parse_status(status), fields, length)
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's ``write`` callable: send ``data`` now (the head first, if not sent)."""
        self._send(_bytes(data), last=False)

    def _send(self, data: bytes, *, last: bool) -> None:
        """Hand ``data`` to the loop, once the chunk before it is written and drained."""
        if not data and not last:
            return
        head = None
        if not self._head_sent:
            response = self._response
            if response is None:
                raise AssertionError("the app returned a body without calling start_response")
            head = response[:2]
            self._head_sent = True
        with self._cond:
            while self._in_flight and not self.gone:
                self.waiting = True
                self._cond.wait()
                self.waiting = False
            if self._error is not None:
                raise self._error
            if self.gone:
                raise ClientDisconnected("the client closed the connection")
            self._in_flight = not last
        self._handed += len(data)
        if last:
            self.ended = True
            self.post(self._finish, data, head)
        else:
            self.post(self._deliver, data, head)

    def post(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback(*args)`` on the loop (from the app's thread). A loop already closed
        (the worker ended while this thread ran on, abandoned as stuck) has nobody left to
        tell: the thread ends quietly instead of dying of ``RuntimeError``."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return  # (not contextlib.suppress: this runs once per response or chunk)

    def run(self, app: WSGIApp, base: Environ) -> None:
        """Run ``app`` for this request (in a pool thread) and settle its response."""
        try:
            environ = build_environ(self.scope, base, WSGIInput(self.take_body))
            result = app(environ, self.start_response)
            try:
                if type(result) is list and len(result) == 1:
                    last = _bytes(result[0])  # the common case: one chunk, sent with the end
                else:
                    last = self._iterate(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            self._send(last, last=True)
        except BaseException as exc:  # the app's errors; the thread must not die of them
            self.ended = True
            self.post(self._failed, exc)

    def _iterate(self, result: Iterable[bytes]) -> bytes:
        """Hand the chunks of ``result`` to the loop as they come, but the one that completes
        the Content-Length the app gave: that one is returned, to go with the end of the
        response (so an iterable of one chunk, as frameworks return, is ONE call too)."""
        held = b""
        for chunk in result:
            data = _bytes(chunk)
            if not data:
                continue
            if held:  # more than the Content-Length: the framing refuses it
                self._send(held, last=False)
                held = b""
            response = self._response
            if response is not None and self._handed + len(data) == response[2]:
                held = data
            else:
                self._send(data, last=False)
        return held

    # -- the response (on the loop) --------------------------------------------------------

    def _write(self, data: bytes, head: Head | None, more: bool) -> bool:
        """Write a chunk (with the head first, when given); False if it was not written."""
        if self.gone or self._transport.is_closing():
            return False
        if head is not None:
            self.status, self.reason = head[0]
            self.start = {"headers": head[1]}
        try:
            self._write_body(data, more)
        except (RuntimeError, TypeError, ValueError) as exc:  # a bad header, a wrong length
            self._error = exc
            logger.error("Exception in WSGI application", exc_info=exc)
            self._on_abort(self)
            return False
        return True

    def _deliver(self, data: bytes, head: Head | None) -> None:
        if self._write(data, head, True) and self._flow.write_paused:
            self._loop.create_task(self._drained())
        else:
            self._release()

    async def _drained(self) -> None:
        await self._flow.drain()  # until the client reads, or the connection goes
        self._release()

    def _release(self) -> None:
        with self._cond:
            self._in_flight = False
            self._cond.notify()

    def _finish(self, data: bytes, head: Head | None) -> None:
        # (Past --timeout the connection is closed already: nothing is written.)
        self._write(data, head, False)
        if not self.complete:  # the client left (or the write failed): close
            self._on_abort(self)
        self._on_done()

    def time_out(self) -> None:
        """The app's thread ran past ``--timeout`` (on the loop): 504 if nothing was sent,
        else the connection is closed; what the thread does later is dropped."""
        self.stuck = True
        self._on_abort(self, 504)  # (not complete: the thread had not ended)

    def _failed(self, exc: BaseException) -> None:
        left = self.disconnected or self._transport.is_closing()
        if exc is self._error:
            pass  # logged on the loop already, when the framing refused the chunk
        elif left and isinstance(exc, OSError):
            logger.debug("client went away during the response: %r", exc)
        else:
            logger.error("Exception in WSGI application", exc_info=exc)
        self._on_abort(self)  # (a cycle already answered is not the connection's any more)
        self._on_done()


def _bytes(data: object) -> bytes:
    if type(data) is bytes:
        return data
    raise TypeError(f"a WSGI app must yield bytes, got {type(data).__name__}")


def thread_stack(thread: threading.Thread | None) -> str:
    """The current stack of ``thread``, formatted (empty if it is not running)."""
    import traceback

    frame = sys._current_frames().get(thread.ident or -1) if thread is not None else None
    if frame is None:
        return ""
    return "".join(traceback.format_stack(frame))
