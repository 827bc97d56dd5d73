"""Shared E-port card profile: APDUs, TLV, PIV constants, SM2/SM3 and the E-port data object."""
