"""TLS in the HTTP worker: the context from the certificate files, checked before anything
forks, and HTTPS on real sockets (certificates from trustme)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from prefork import ConfigError
from prefork.http import HTTPConfig, HTTPWorker
from prefork.http._tls import server_context


class Channel:
    def send_frame(self, kind: str, body: Any = None) -> None:
        pass


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(tmp_path: Path, ca: trustme.CA) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    return str(certfile), str(keyfile)


def test_no_certificate_no_tls() -> None:
    assert server_context(HTTPConfig(app="m:a")) is None


def test_a_context_from_the_files_offers_http_1_1(cert_files: tuple[str, str]) -> None:
    certfile, keyfile = cert_files
    context = server_context(HTTPConfig(app="m:a", ssl_certfile=certfile, ssl_keyfile=keyfile))
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_NONE
    # no cipher list: OpenSSL's own
    config = HTTPConfig(app="m:a", ssl_certfile=certfile, ssl_keyfile=keyfile, ssl_ciphers="")
    assert server_context(config) is not None


def test_client_certificates_can_be_required(cert_files: tuple[str, str], tmp_path: Path,
                                             ca: trustme.CA) -> None:  # fmt: skip
    certfile, keyfile = cert_files
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = HTTPConfig(
        app="m:a",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_ca_certs=str(tmp_path / "ca.pem"),
        ssl_cert_reqs=2,
    )
    context = server_context(config)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("what", ["missing", "garbage", "wrong key"])
def test_a_bad_certificate_is_one_line_before_anything_forks(
    cert_files: tuple[str, str], tmp_path: Path, ca: trustme.CA, what: str
) -> None:
    certfile, keyfile = cert_files
    if what == "missing":
        certfile = str(tmp_path / "none.pem")
    elif what == "garbage":
        Path(certfile).write_text("not a certificate")
    else:
        other = ca.issue_cert("example.org")
        other.private_key_pem.write_to_path(keyfile)
    options = {"app": "m:a", "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    with pytest.raises(ConfigError) as info:
        HTTPWorker.check_options(options)
    message = str(info.value)
    assert message.startswith(f"cannot use the TLS certificate {certfile!r}: ")
    assert "check --ssl-certfile" in message and "\n" not in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"ssl_ca_certs": "/nonexistent/ca.pem", "ssl_cert_reqs": 2},
            "cannot use the CA certificates '/nonexistent/ca.pem': No such file or directory; "
            "check --ssl-ca-certs",
        ),
        (
            {"ssl_ciphers": "NO-SUCH-CIPHER"},
            "cannot use the cipher list 'NO-SUCH-CIPHER': No cipher can be selected.; "
            "check --ssl-ciphers",
        ),
    ],
)
def test_each_tls_file_or_setting_is_named_when_it_cannot_be_used(
    cert_files: tuple[str, str], options: dict[str, Any], message: str
) -> None:
    config = HTTPConfig(app="m:a", ssl_certfile=cert_files[0], ssl_keyfile=cert_files[1], **options)
    with pytest.raises(ConfigError) as info:
        server_context(config)
    assert str(info.value) == message


def test_an_unsupported_tls_protocol_is_named(
    cert_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(protocol: int) -> ssl.SSLContext:
        raise ValueError("invalid or unsupported protocol version 3")

    monkeypatch.setattr(ssl, "SSLContext", unsupported)
    config = HTTPConfig(app="m:a", ssl_certfile=cert_files[0], ssl_version=3)
    with pytest.raises(ConfigError) as info:
        server_context(config)
    assert str(info.value) == (
        "cannot use TLS protocol 3: invalid or unsupported protocol version 3; check --ssl-version"
    )


def test_tls_option_refusals() -> None:
    with pytest.raises(ConfigError, match="ssl_keyfile needs ssl_certfile"):
        HTTPConfig(app="m:a", ssl_keyfile="k.pem")
    with pytest.raises(ConfigError, match="ssl_cert_reqs must be 0"):
        HTTPConfig(app="m:a", ssl_cert_reqs=3)


def test_a_tls_broker_is_https_and_is_reset_when_drained(cert_files: tuple[str, str]) -> None:
    plain = {"app": "m:a"}
    tls = {"app": "m:a", "ssl_certfile": cert_files[0]}
    assert (HTTPWorker.url_scheme_for(plain), HTTPWorker.url_scheme_for(tls)) == ("http", "https")
    assert HTTPWorker.drained_reply_for(plain).startswith(b"HTTP/1.1 503")
    assert HTTPWorker.drained_reply_for(tls) == b""


async def scheme_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = scope["scheme"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def https_get(port: int, ca: trustme.CA) -> tuple[int, bytes, str | None]:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["http/1.1"])
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert conn.sock is not None
        return response.status, response.read(), conn.sock.selected_alpn_protocol()
    finally:
        conn.close()


def silent_client(port: int) -> float:
    """Connect and never start the handshake: seconds until the server closes."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert c.recv(100) == b""
    return time.monotonic() - began


def test_https_on_real_sockets(cert_files: tuple[str, str], ca: trustme.CA) -> None:
    async def main() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        options = {
            "app": scheme_app,
            "lifespan": "off",
            "ssl_certfile": cert_files[0],
            "ssl_keyfile": cert_files[1],
            "header_timeout": 0.5,
        }
        worker = HTTPWorker(
            type="http", id=1, generation=1, sockets=[sock], options=options, channel=Channel()
        )
        await worker.init()
        status, body, alpn = await asyncio.to_thread(https_get, port, ca)
        assert (status, body, alpn) == (200, b"https", "http/1.1")
        took = await asyncio.to_thread(silent_client, port)
        assert took < 5  # the handshake counts against --header-timeout (0.5 s here)
        await worker.drain()

    uvloop.run(main())
