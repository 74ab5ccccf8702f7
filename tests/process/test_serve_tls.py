"""`prefork serve` over TLS: HTTPS, certificate rotation by SIGHUP, and a broken new
certificate rolled back like broken code."""

from __future__ import annotations

import http.client
import signal
import ssl
import sys
from pathlib import Path

import pytest
import trustme
from helpers import ROOT, wait_until

pytestmark = pytest.mark.timeout(60)


def issue(ca: trustme.CA, certfile: Path, keyfile: Path) -> None:
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))


def answers(port: int, ca: trustme.CA) -> bool:
    """Whether a client trusting only ``ca`` gets a 200."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except (OSError, ssl.SSLError):
        return False
    finally:
        conn.close()


def test_https_rotates_certificates_on_reload_and_rolls_back_a_bad_one(start, sock, tmp_path):
    port = sock.getsockname()[1]
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    first, second = trustme.CA(), trustme.CA()
    issue(first, certfile, keyfile)
    argv = [sys.executable, "-m", "prefork", "serve", "--bind", f"fd://{sock.fileno()}"]
    argv += ["--workers", "1", "--app-dir", str(Path(ROOT) / "examples")]
    argv += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile), "hello:app"]
    master = start(argv, pass_fds=[sock])
    wait_until(lambda: answers(port, first), 15, "HTTPS with the first certificate")
    assert f"on https://127.0.0.1:{port}" in master.stderr()
    issue(second, certfile, keyfile)  # the operator puts a new certificate in place
    master.signal(signal.SIGHUP)
    wait_until(lambda: answers(port, second), 15, "HTTPS with the new certificate")
    certfile.write_text("a broken certificate")
    master.signal(signal.SIGHUP)
    wait_until(lambda: "reload rolled back" in master.stderr(), 15, "the rollback")
    assert "cannot use the TLS certificate" in master.stderr()
    assert answers(port, second)  # the workers with the good certificate still serve
    master.signal(signal.SIGINT)
    assert master.wait_exit() == 0
