"""The host-side card library: one token interface (token.py) and its backends.

The daemon, the data centre and the simulator share this package; it imports nothing from the
daemon. Only cardlib.pcsc imports pyscard and only cardlib.pkcs11 imports the PKCS#11 library.
"""
