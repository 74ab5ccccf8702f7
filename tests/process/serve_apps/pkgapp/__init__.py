"""A package whose ``__init__`` runs code at import, as many projects' packages do.

``VERSION`` is read from the file named by ``SERVE_APP_VERSION`` when the package is
imported, standing in for code that a deploy changes; ``IMPORTED_BY`` is the importing pid.
"""

from __future__ import annotations

import os

_path = os.environ.get("SERVE_APP_VERSION")
VERSION = open(_path).read().strip() if _path else "0"  # noqa: SIM115
IMPORTED_BY = os.getpid()
