"""The master's effects (filled in below)."""
