"""The decision core (filled in below)."""
