"""E-port smart-card middleware: the daemon, its clients and a virtual E-port card."""

__version__ = "0.1.0"
