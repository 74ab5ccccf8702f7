"""Writes requests.json from gunicorn's ``tests/requests/valid/*.py`` (not copied here): each
request's method, path, query, version, headers and body, as gunicorn's parser yields them.

    python derive_requests.py GUNICORN_CHECKOUT/tests/requests/valid > requests.json

Run with the commit README.md names checked out; it loads the files as gunicorn's
``tests/treq.py`` does (a module with ``uri`` and ``cfg`` in scope).
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any

from gunicorn.config import Config
from gunicorn.util import split_request_uri


def uri(raw: str) -> dict[str, str]:
    parts = split_request_uri(raw)
    return {"path": parts.path or "", "query": parts.query or ""}


def requests_of(path: Path) -> list[dict[str, Any]]:
    module = types.ModuleType("__config__")
    module.uri = uri  # type: ignore[attr-defined]
    module.cfg = Config()  # type: ignore[attr-defined]
    importlib.machinery.SourceFileLoader("__config__", str(path)).exec_module(module)
    found = module.request  # type: ignore[attr-defined]
    rows = []
    for request in found if isinstance(found, list) else [found]:
        body = request["body"]
        body = body.encode("latin-1") if isinstance(body, str) else body
        rows.append(
            {
                "method": request["method"],
                **request["uri"],
                "version": list(request["version"]),
                "headers": [list(header) for header in request["headers"]],
                "body": body.decode("latin-1"),  # bytes as code points 0-255
            }
        )
    return rows


def main(valid: Path) -> None:
    lines = [
        f" {json.dumps(path.stem + '.http')}: {json.dumps(requests_of(path))}"
        for path in sorted(valid.glob("*.py"))
    ]
    print("{\n" + ",\n".join(lines) + "\n}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
