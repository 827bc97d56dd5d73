"""What every subsystem client (customs, bonded verification, authorization) shares to reach
the E-port data centre: the channel, requests signed on the card through eportd, errors."""
