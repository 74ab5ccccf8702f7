"""An app module that exists but whose own import is missing (a dependency not installed)."""

import no_such_dependency_for_prefork_tests  # noqa: F401

app = None
