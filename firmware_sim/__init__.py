"""A virtual E-port card (PIV card edge with the E-port profile) for the vpcd driver of pcscd."""
