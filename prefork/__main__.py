"""``python -m prefork`` runs the command line."""

import sys

from prefork.cli import main

sys.exit(main())
