"""The exit codes of `eport-gateway` and its recipes (docs/exit-codes.md has the table).

The first four are every console script's (eport.common.funnel.BASE_EXIT_CODES); the recipes'
results share 1 and 2 with them, as they always have: the JSON's error.code tells them apart.
`eport-gateway tls ...` has 5 to 9 (docs/gateway.md says when each happens).
"""

from __future__ import annotations

from enum import IntEnum


class GatewayExit(IntEnum):
    OK = 0
    UNEXPECTED = 1
    SIGNATURE_INVALID = 1  # ceb-verify: the signature does not verify
    USAGE = 2              # bad option or argument; serve: a non-loopback address refused
    BAD_INPUT = 2          # a recipe: the input cannot be signed or verified as given
    GATEWAY_FAILED = 3     # a recipe: the gateway or the card failed or refused
    CANNOT_LISTEN = 4      # serve: a port is in use or may not be bound
    NEEDS_ROOT = 5         # tls: --system or --hosts without root; uninstall left root's parts
    TOOL_MISSING = 6       # tls: certutil or update-ca-certificates is not installed
    STEP_FAILED = 7        # tls: certutil, update-ca-certificates or a file write failed
    NOT_READY = 8          # tls status: something the browser needs is missing or wrong
    NAME_NOT_LOCAL = 9     # tls install done, but wss.singlewindow.cn does not resolve to loopback
    INTERRUPTED = 130      # Ctrl-C before serving (a running gateway stops cleanly with 0)
