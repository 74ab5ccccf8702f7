"""An app as heavy as a real service: it imports for about 1.5 s and holds about 150 MB of
Python objects, built from the standard library only (so it installs anywhere). It answers
with its pid, to tell the workers apart.

prefork serve --app-dir examples heavy_app:app --workers 4 --template
(``benchmarks/templates.py`` measures it with and without templates, and against peers.)

HEAVY_IMPORT_SECONDS and HEAVY_OBJECTS change the weight (1.5 and 600000).
"""

import os
import time
from typing import Any

_started = time.monotonic()

#: Objects such as a framework, its models and their caches leave behind: dicts and strings.
DATA = [
    {"k": i, "s": "x" * 40 + str(i)} for i in range(int(os.environ.get("HEAVY_OBJECTS", 600_000)))
]

# The rest of the import time: modules, configuration, warm-up.
while time.monotonic() - _started < float(os.environ.get("HEAVY_IMPORT_SECONDS", 1.5)):
    time.sleep(0.05)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
