"""WebSockets on a fake transport: the handshake, messages both ways, limits, liveness,
closing and draining. A wsproto client makes the client's frames and reads ours."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from _http_fakes import SPLITS, hello_app, run
from _ws_fakes import ACCEPT, WSHarness, upgrade
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from prefork.http import ClientDisconnected
from prefork.http._websocket import CLOSE_TIMEOUT, WebSocketProtocol

Messages = list[dict[str, Any]]


def echo(log: Messages, **accept: Any) -> Any:
    """Accept (with ``accept``'s extra keys), echo every message, record all it receives."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        log.append(scope)
        log.append(await receive())
        await send({"type": "websocket.accept", **accept})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({**message, "type": "websocket.send"})

    return app


def closes(events: list[Any]) -> list[int]:
    return [int(e.code) for e in events if isinstance(e, CloseConnection)]


def messages(events: list[Any]) -> list[str | bytes]:
    return [e.data for e in events if isinstance(e, Message)]


# --- the handshake ------------------------------------------------------------------------


def test_handshake_scope_and_echo_of_text_and_bytes() -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log, subprotocol="chat", headers=[(b"x-a", b"1")]))
        head = await h.open("Sec-WebSocket-Protocol: chat, superchat")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        lines = head.split(b"\r\n")
        assert b"sec-websocket-accept: " + ACCEPT in lines
        assert b"sec-websocket-protocol: chat" in lines and b"x-a: 1" in lines
        assert b"server: prefork" in lines and any(x.startswith(b"date: ") for x in lines)
        scope, connect = log[0], log[1]
        assert connect == {"type": "websocket.connect"}
        assert scope["type"] == "websocket" and scope["scheme"] == "ws" and "method" not in scope
        assert scope["path"] == "/chat" and scope["query_string"] == b"x=1"
        assert scope["subprotocols"] == ["chat", "superchat"]
        assert scope["extensions"] == {"websocket.http.response": {}}
        assert scope["asgi"]["spec_version"] == "2.4"
        h.send(TextMessage(data="héllo"))
        h.send(BytesMessage(data=b"\x00\xff"))
        await h.until(lambda: len(log) == 4)
        await h.settle_loop()
        assert messages(h.events()) == ["héllo", b"\x00\xff"]
        assert log[2:] == [
            {"type": "websocket.receive", "text": "héllo"},
            {"type": "websocket.receive", "bytes": b"\x00\xff"},
        ]
        h.send(CloseConnection(1000, "bye"))
        await h.settle()
        assert closes(h.events()) == [1000]  # our answer to the client's close
        assert log[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}
        assert h.transport.closed and not h.state.connections and h.state.inflight == 0
        assert h.state.requests == 1

    run(main())


@pytest.mark.parametrize("how", SPLITS)
def test_frames_split_every_way_and_fragments_are_reassembled(how: str) -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log))
        await h.open()
        h.send(TextMessage(data="ab", message_finished=False), how)
        h.send(Ping(b"p1"), how)  # a control frame between two fragments
        h.send(TextMessage(data="cd", message_finished=True), how)
        h.send(BytesMessage(data=b"12", message_finished=False), how)
        h.send(BytesMessage(data=b"34", message_finished=True), how)
        await h.until(lambda: len(log) == 4)
        await h.settle_loop()
        events = h.events()
        assert [e.payload for e in events if isinstance(e, Pong)] == [b"p1"]
        assert messages(events) == ["abcd", b"1234"]

    run(main())


def test_bytes_after_the_handshake_request_wait_for_the_accept() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        log: Messages = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await gate.wait()
            await echo(log)(scope, _replay({"type": "websocket.connect"}, receive), send)

        h = WSHarness(app)
        from wsproto.connection import Connection, ConnectionType

        client = Connection(ConnectionType.CLIENT)
        h.feed(upgrade() + client.send(TextMessage(data="early")))
        await h.settle_loop()
        assert h.out == b"" and not h.transport.reading  # nothing read before the accept
        h.socket.data_received(client.send(TextMessage(data="in flight")))
        gate.set()
        await h.until(lambda: len(log) == 4)
        assert [m.get("text") for m in log[2:]] == ["early", "in flight"]
        assert h.transport.reading

    run(main())


def _replay(first: dict[str, Any], receive: Any) -> Any:
    given = [first]

    async def again() -> dict[str, Any]:
        return given.pop() if given else await receive()

    return again


@pytest.mark.parametrize(
    ("extra", "status", "says"),
    [
        (("Sec-WebSocket-Version: 8",), 426, b"sec-websocket-version: 13\r\n"),
        (("Sec-WebSocket-Key: c2hvcnQ=",), 400, b"Invalid Sec-WebSocket-Key"),
        (("Sec-WebSocket-Key: not base64!!!!!!!!!!!!!",), 400, b"Invalid Sec-WebSocket-Key"),
    ],
)
def test_a_bad_handshake_is_refused(extra: tuple[str, ...], status: int, says: bytes) -> None:
    async def main() -> None:
        h = WSHarness(hello_app)
        if extra[0].startswith("Sec-WebSocket-Version"):
            h.feed(upgrade("/", version="8"))
        else:
            h.feed(upgrade("/", key=extra[0].split(": ", 1)[1]))
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 %d " % status) and says in h.out
        assert h.transport.closed

    run(main())


UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
KEYED = UPGRADE + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n" + KEYED + "\r\n",
        "GET / HTTP/1.0\r\nHost: t\r\n" + KEYED + "\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n" + KEYED + "\r\nab",
        "GET / HTTP/1.1\r\nHost: t\r\n" + UPGRADE + "\r\n",  # no key
        "GET / HTTP/1.1\r\nHost: t\r\n" + KEYED + "Sec-WebSocket-Key: eA==\r\n\r\n",
    ],
    ids=["post", "http-1.0", "body", "no-key", "two-keys"],
)
def test_a_handshake_that_is_not_a_keyed_bodiless_get_is_refused(raw: str) -> None:
    async def main() -> None:
        h = WSHarness(hello_app)
        h.feed(raw.encode())
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 400 ")
        assert h.transport.closed and h.state.requests == 0

    run(main())


def test_ws_none_serves_an_upgrade_request_as_plain_http() -> None:
    async def main() -> None:
        h = WSHarness(hello_app, {"ws": "none"})
        h.feed(upgrade())
        await h.settle()
        assert [r.status for r in h.responses("GET")] == [200]

    run(main())


def test_limit_concurrency_counts_websockets() -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log), {"limit_concurrency": 1})
        await h.open()
        second = h.connect()
        second.data_received(upgrade())
        await h.settle_loop()
        assert second.transport.out.startswith(b"HTTP/1.1 503 ")  # type: ignore[attr-defined]

    run(main())


def test_an_upgrade_while_draining_gets_503() -> None:
    async def main() -> None:
        h = WSHarness(hello_app)
        h.proto.start_drain()
        h.feed(upgrade())
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 503 ")

    run(main())


def test_an_upgrade_after_the_client_shut_its_side_is_closed() -> None:
    """Pipelined behind a request, then a FIN: when its turn comes no frame can follow."""

    async def main() -> None:
        gate = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await gate.wait()
            await hello_app(scope, receive, send)

        h = WSHarness(app)
        h.feed(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + upgrade())
        h.eof()
        gate.set()
        await h.settle()
        assert [r.status for r in h.responses("GET")] == [200]
        assert h.out.count(b"HTTP/1.1") == 1 and h.transport.closed
        assert h.state.requests == 1  # the upgrade was never admitted

    run(main())


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("fragments", [1, 3])
def test_a_message_over_ws_max_size_closes_with_1009(how: str, fragments: int) -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log), {"ws_max_size": 100})
        await h.open()
        h.send(TextMessage(data="x" * 100))  # at the limit: fine
        await h.until(lambda: len(log) == 3)
        await h.settle_loop()
        piece = "é" * 17  # 34 bytes a piece: the limit counts bytes, not characters
        for i in range(fragments):
            h.send(TextMessage(data=piece, message_finished=i == fragments - 1), how)
        await h.settle_loop()
        events = h.events()
        assert messages(events) == ["x" * 100] + (["é" * 17] if fragments == 1 else [])
        if fragments == 3:
            assert closes(events) == [1009]
            assert log[-1]["code"] == 1009 and h.transport.closed

    run(main())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x82abcd" + bytes([0xFF ^ ord("a"), 0xFE ^ ord("b")]), 1007),  # invalid UTF-8
        (b"\x81\x02hi", 1002),  # a client frame that is not masked
        (b"\x83\x80abcd", 1002),  # a reserved opcode
        (b"\x09\x80abcd", 1002),  # a fragmented ping
    ],
    ids=["utf8", "unmasked", "opcode", "fragmented-control"],
)
def test_protocol_errors_close_with_their_code(frame: bytes, code: int) -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log))
        await h.open()
        h.feed(frame)
        await h.settle()
        assert closes(h.events()) == [code]
        assert log[-1]["type"] == "websocket.disconnect" and log[-1]["code"] == code
        assert h.transport.closed

    run(main())


def test_per_message_deflate_is_negotiated_and_bounded() -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log), {"ws_max_size": 1 << 16})
        head = await h.open(
            "Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits",
            extensions=[PerMessageDeflate()],
        )
        assert b"sec-websocket-extensions: permessage-deflate; client_max_window_bits=15" in head
        h.send(TextMessage(data="z" * 5000))
        await h.until(lambda: len(log) == 3)
        await h.settle_loop()
        assert messages(h.events()) == ["z" * 5000]
        # A bomb: 64 KiB of zeros packs into ~100 bytes. Never inflated past the limit.
        h.send(BytesMessage(data=bytes(1 << 17)))
        await h.settle()
        assert closes(h.events()) == [1009]

    run(main())


def test_per_message_deflate_can_be_turned_off() -> None:
    async def main() -> None:
        h = WSHarness(echo([]), {"ws_per_message_deflate": False})
        head = await h.open("Sec-WebSocket-Extensions: permessage-deflate")
        assert b"sec-websocket-extensions" not in head

    run(main())


def test_a_full_queue_stops_reading_until_the_app_takes_messages() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        got: list[str] = []

        async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await gate.wait()
            while len(got) < 10:
                got.append((await receive())["text"])

        h = WSHarness(slow, {"ws_max_queue": 3})
        await h.open()
        assert h.client is not None
        h.feed(b"".join(h.client.send(TextMessage(data=str(i))) for i in range(10)))
        await h.settle_loop()
        ws: WebSocketProtocol = h.socket
        assert len(ws.session.queue) == 3 and not h.transport.reading  # the rest waits unparsed
        gate.set()
        await h.until(lambda: len(got) == 10)
        assert got == [str(i) for i in range(10)] and h.transport.reading

    run(main())


def test_a_client_that_stops_reading_holds_the_app_and_is_aborted() -> None:
    async def main() -> None:
        sent = 0

        async def flood(scope: dict[str, Any], receive: Any, send: Any) -> None:
            nonlocal sent
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                await send({"type": "websocket.send", "bytes": bytes(1000)})
                sent += 1

        h = WSHarness(flood, {"body_timeout": 5.0}, high_water=10_000)
        await h.open()
        await h.settle_loop()
        assert sent == 9  # the 10th waits in send() while the client does not read
        assert not h.transport.reading  # and no pongs pile up meanwhile
        h.transport.client_reads()
        await h.settle_loop()
        assert sent == 19 and not h.transport.reading  # paused again: the client reads no more
        h.advance(5.0)
        h.state.sweep(h.loop.time())
        await h.settle()
        assert h.transport.aborted and not h.state.tasks

    run(main())


# --- liveness -----------------------------------------------------------------------------


def test_pings_keep_an_answering_peer_and_close_a_silent_one() -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log), {"ws_ping_interval": 1.0, "ws_ping_timeout": 2.0})
        assert h.state.sweep_interval == 0.25
        await h.open()
        h.state.sweep(h.loop.time())
        assert h.events() == []  # not due yet
        for _ in range(3):
            h.advance(1.0)
            h.state.sweep(h.loop.time())
            pings = [e for e in h.events() if isinstance(e, Ping)]
            assert len(pings) == 1
            h.send(Pong(b"not ours"))  # ignored: only the answer to our ping counts
            h.send(pings[0].response())
        h.advance(1.0)
        h.state.sweep(h.loop.time())
        assert [e for e in h.events() if isinstance(e, Ping)]
        h.advance(1.9)
        h.state.sweep(h.loop.time())
        assert h.events() == [] and not h.transport.closed
        h.advance(0.2)
        h.state.sweep(h.loop.time())
        await h.settle()
        assert closes(h.events()) == [1011] and h.transport.closed
        assert log[-1] == {
            "type": "websocket.disconnect",
            "code": 1011,
            "reason": "keepalive ping timeout",
        }

    run(main())


def test_pings_without_a_timeout_never_close() -> None:
    async def main() -> None:
        h = WSHarness(echo([]), {"ws_ping_interval": 1.0, "ws_ping_timeout": 0})
        await h.open()
        for _ in range(3):
            h.advance(1.0)
            h.state.sweep(h.loop.time())
        assert len([e for e in h.events() if isinstance(e, Ping)]) == 3
        assert not h.transport.closed

    run(main())


# --- closing and draining -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"), [(1012, "server restarting"), (1001, "server going away")]
)
def test_a_drain_closes_with_its_code_and_waits_for_the_peer(code: int, reason: str) -> None:
    async def main() -> None:
        log: Messages = []
        h = WSHarness(echo(log))
        await h.open()
        assert h.client is not None
        late = h.client.send(TextMessage(data="late"))  # sent before the client sees our close
        late += h.client.send(Ping(b"unanswered"))  # no pong once our close frame is out
        drained = asyncio.ensure_future(h.state.drain(30.0, close_code=code))
        await h.settle_loop()
        events = h.events()
        assert closes(events) == [code] and events[-1].reason == reason
        assert log[-1] == {"type": "websocket.disconnect", "code": code, "reason": reason}
        assert not drained.done() and not h.transport.closed  # the peer's answer is due
        h.feed(late)  # dropped: the app was told it is over
        assert h.events() == []
        h.send(CloseConnection(code))
        await drained
        assert h.transport.closed and len(log) == 3
        h.socket.data_received(b"\x81\x80abcd")  # bytes after the close: ignored
        h.socket.start_drain()  # a drain reaching a closed socket: nothing to do
        assert h.out[h._seen :] == b""

    run(main())


def test_a_peer_that_never_answers_the_close_is_closed_at_the_deadline() -> None:
    async def main() -> None:
        h = WSHarness(echo([]))
        await h.open()
        drained = asyncio.ensure_future(h.state.drain(close_code=1001))
        await h.settle_loop()
        h.advance(CLOSE_TIMEOUT - 0.1)
        h.state.sweep(h.loop.time())
        assert not h.transport.closed
        h.advance(0.2)
        h.state.sweep(h.loop.time())
        await drained
        assert h.transport.closed and not h.transport.aborted

    run(main())


def test_a_protocol_error_after_our_close_just_closes() -> None:
    async def main() -> None:
        h = WSHarness(echo([]), {"ws_ping_interval": 0})
        await h.open()
        drained = asyncio.ensure_future(h.state.drain(close_code=1001))
        await h.settle_loop()
        assert closes(h.events()) == [1001]
        h.feed(b"\x81\x02hi")  # unmasked: an error, but our close frame is already out
        await drained
        assert h.events() == [] and h.transport.closed

    run(main())


def test_a_drain_during_the_handshake_closes_right_after_the_accept() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        log: Messages = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await gate.wait()
            await echo(log)(scope, receive, send)

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle_loop()
        drained = asyncio.ensure_future(h.state.drain(10.0, close_code=1012))
        await h.settle_loop()
        gate.set()
        await h.until(lambda: b"\r\n\r\n" in h.out)
        h._seen = h.out.index(b"\r\n\r\n") + 4
        from wsproto.connection import Connection, ConnectionType

        h.client = Connection(ConnectionType.CLIENT)
        await h.settle_loop()
        assert closes(h.events()) == [1012]
        h.send(CloseConnection(1012))
        await drained

    run(main())


def test_a_handshake_the_app_never_answers_is_closed_when_the_drain_ends() -> None:
    async def main() -> None:
        async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            message = await receive()
            assert message == {"type": "websocket.disconnect", "code": 1006, "reason": ""}

        h = WSHarness(silent)
        h.feed(upgrade())
        await h.settle_loop()
        drained = asyncio.ensure_future(h.state.drain(5.0))
        await h.settle_loop()
        h.advance(5.0)
        h.state.sweep(h.loop.time())
        await drained
        await h.settle()
        assert h.out == b"" and h.transport.closed

    run(main())


def test_the_app_closing_first_waits_for_the_peer_and_cannot_send_again() -> None:
    async def main() -> None:
        errors: list[BaseException] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4000, "reason": "done"})
            for message in ({"type": "websocket.send", "text": "x"}, {"type": "websocket.close"}):
                try:
                    await send(message)
                except RuntimeError as exc:
                    errors.append(exc)
            assert (await receive())["code"] == 4000

        h = WSHarness(app)
        await h.open()
        await h.settle_loop()
        assert [(int(e.code), e.reason) for e in h.events()] == [(4000, "done")]
        assert len(errors) == 2 and not h.transport.closed
        h.send(CloseConnection(4000))
        await h.settle()
        assert h.transport.closed

    run(main())


def test_send_after_the_peer_left_raises_client_disconnected() -> None:
    async def main() -> None:
        raised: list[BaseException] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            assert (await receive())["type"] == "websocket.disconnect"
            try:
                await send({"type": "websocket.send", "text": "x"})
            except ClientDisconnected as exc:
                raised.append(exc)

        h = WSHarness(app)
        await h.open()
        h.eof()  # a FIN with no close frame
        await h.settle()
        assert len(raised) == 1 and isinstance(raised[0], OSError)

    run(main())


@pytest.mark.parametrize(
    ("ending", "code", "logged"),
    [
        ("return", 1000, ""),
        ("raise", 1011, "Exception in ASGI application"),
        ("return-1", 1011, "should return None"),
        ("bad-code", 1011, "websocket.close 'code'"),
        ("bad-send", 1011, "websocket.send needs"),
        ("bad-bytes", 1011, "'bytes' must be bytes"),
        ("bad-type", 1011, "Unexpected ASGI message 'http.response.start'"),
    ],
)
def test_an_app_that_ends_after_the_accept_closes_the_socket(
    ending: str, code: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "bytes": bytearray(b"ok")})
            if ending == "raise":
                raise ValueError("boom")
            if ending == "return-1":
                return 1
            if ending == "bad-code":
                await send({"type": "websocket.close", "code": 99})
            if ending == "bad-send":
                await send({"type": "websocket.send"})
            if ending == "bad-bytes":
                await send({"type": "websocket.send", "bytes": "text"})
            if ending == "bad-type":
                await send({"type": "http.response.start"})
            return None

        h = WSHarness(app)
        await h.open()
        await h.settle_loop()
        events = h.events()
        assert messages(events) == [b"ok"] and closes(events) == [code]
        assert logged in caplog.text

    with caplog.at_level(logging.ERROR, "prefork.http"):
        run(main())


# --- denying the handshake ----------------------------------------------------------------


def test_a_close_before_the_accept_is_a_403() -> None:
    async def main() -> None:
        told: Messages = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.close"})
            told.append(await receive())
            with pytest.raises(ClientDisconnected):
                await send({"type": "websocket.accept"})

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle()
        assert [r.status for r in h.responses("GET")] == [403]
        assert h.transport.closed and told == [
            {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        ]

    run(main())


def test_the_denial_response_extension_sends_the_apps_response() -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            start = {"status": 401, "headers": [(b"www-authenticate", b"Bearer")]}
            await send({"type": "websocket.http.response.start", **start})
            await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"entry"})

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle()
        [response] = h.responses("GET")
        assert response.status == 401 and response.body == b"no entry"
        assert response.header(b"www-authenticate") == b"Bearer"
        assert h.transport.closed and not h.transport.aborted

    run(main())


@pytest.mark.parametrize(
    ("messages_sent", "status", "logged"),
    [
        ([], 500, "returned without accepting"),
        ([{"type": "websocket.send", "text": "x"}], 500, "Expected ASGI message"),
        ([{"type": "websocket.accept", "headers": [(b"x", b"a\nb")]}], 500, "invalid response"),
        ([{"type": "websocket.accept", "subprotocol": b"chat"}], 500, "must be a str"),
    ],
)
def test_an_app_that_fails_before_accepting_gets_a_500(
    messages_sent: Messages, status: int, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            for message in messages_sent:
                await send(message)

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle()
        assert [r.status for r in h.responses("GET")] == [status]

    with caplog.at_level(logging.ERROR, "prefork.http"):
        run(main())
    assert logged in caplog.text


@pytest.mark.parametrize("wrong", [{"type": "websocket.accept"}, None])
def test_a_denial_left_unfinished_or_out_of_order_is_aborted(
    wrong: dict[str, Any] | None, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.http.response.start", "status": 404})
            part = {"body": b"x", "more_body": True}
            await send({"type": "websocket.http.response.body", **part})
            if wrong is not None:
                await send(wrong)

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle()
        assert h.out.startswith(b"HTTP/1.1 404 ") and h.transport.aborted

    with caplog.at_level(logging.ERROR, "prefork.http"):
        run(main())
    assert ("Expected 'websocket.http.response.body'" in caplog.text) == (wrong is not None)


def test_a_connection_lost_during_the_denial_tells_its_cycle() -> None:
    async def main() -> None:
        raised: list[BaseException] = []
        gate = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.http.response.start", "status": 404})
            await gate.wait()
            try:
                await send({"type": "websocket.http.response.body", "body": b"x"})
            except ClientDisconnected as exc:
                raised.append(exc)

        h = WSHarness(app)
        h.feed(upgrade())
        await h.settle_loop()
        h.transport.abort()
        await h.settle_loop()
        gate.set()
        await h.settle()
        assert len(raised) == 1

    run(main())


@pytest.mark.parametrize(
    ("first", "status"),
    [
        ({"type": "websocket.accept"}, 101),
        ({"type": "websocket.close"}, 403),
        ({"type": "websocket.send", "text": "too early"}, 500),
        ({"type": "websocket.http.response.start", "status": 401}, 401),
    ],
)
def test_the_handshake_is_access_logged(
    first: dict[str, Any],
    status: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = iter([100.0, 100.000042])  # timed to the microsecond: perf_counter, not loop.time
    monkeypatch.setattr("prefork.http._state.perf_counter", lambda: next(ticks))

    async def main() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send(first)
            if status == 401:
                await send({"type": "websocket.http.response.body", "body": b"no"})

        fmt = '"%(r)s" %(s)s %(m)s %(L)s'
        h = WSHarness(app, {"access_log": True, "access_log_format": fmt})
        h.feed(upgrade("/chat?x=1"))
        await h.settle()

    with caplog.at_level(logging.INFO):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "prefork.access"]
    assert lines == [f'"GET /chat?x=1 HTTP/1.1" {status} GET 0.000042']
