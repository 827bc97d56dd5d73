"""Backend: pcsc (see cardlib/token.py)."""
