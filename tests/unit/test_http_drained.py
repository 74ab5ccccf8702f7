"""What the master answers for the HTTP worker while its broker is drained."""

from __future__ import annotations

import h11

from prefork.http import HTTPWorker


def test_drained_reply_is_a_whole_503_that_closes() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(HTTPWorker.drained_reply)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 503
    assert (b"connection", b"close") in response.headers
    body = client.next_event()
    assert isinstance(body, h11.Data) and body.data == b"Service unavailable\n"
    assert isinstance(client.next_event(), h11.EndOfMessage)
