"""Backend: remote (see cardlib/token.py)."""
