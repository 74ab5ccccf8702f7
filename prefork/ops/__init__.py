"""What operators use (filled in below)."""
