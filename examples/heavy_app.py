"""An app as heavy as a real service: it imports for about 1.5 s and holds about 150 MB of
Python objects, built from the standard library only (so it installs anywhere). It answers
with its pid, to tell the workers apart.

prefork serve --app-dir examples heavy_app:app --workers 4
(templates are the default; ``--template off`` to compare: ``benchmarks/templates.py``
measures it with and without templates, and against peers.)

HEAVY_IMPORT_SECONDS and HEAVY_OBJECTS change the weight (1.5 and 600000); HEAVY_WARM_OBJECTS
(default 0) builds that many more objects on a process's first request, as a cache warmed by
traffic does (what ``--refork-after`` shares: the workers forked from a warmed one have it).
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


#: Built on the first request (None until then): what traffic warms (caches, lazy imports).
WARM: list[dict[str, Any]] | None = None


def warm_up() -> None:
    global WARM
    if WARM is None:
        count = int(os.environ.get("HEAVY_WARM_OBJECTS", 0))
        WARM = [{"w": i, "s": "y" * 40 + str(i)} for i in range(count)]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    warm_up()
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
