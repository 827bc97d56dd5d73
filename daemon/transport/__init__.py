"""Transports: the only place pyscard is imported (pcsc.py)."""
