"""Backend: pkcs11 (see cardlib/token.py)."""
