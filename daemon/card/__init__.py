"""The card layers below the daemon's policy: APDU processing and the PIV/E-port card driver.

Nothing here imports pyscard: a connection is anything with `send_and_receive`, so the same
code runs over PC/SC (the transport module) and over the simulator's in-process transport.
"""
