"""The exit codes of `eport`: stable, documented in docs/cli.md, one per kind of outcome.

Scripts branch on these; the exact reason is in the JSON output's error.code.
"""

from __future__ import annotations

from enum import IntEnum

from eport.protos.v1 import eportd_pb2 as pb


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1          # a bug: please report it with the output of --debug
    USAGE = 2               # bad options or arguments (click's own code)
    DAEMON_UNAVAILABLE = 3  # eportd is not running, not reachable, or shutting down
    PCSC_UNAVAILABLE = 4    # pcscd is not running or refuses eportd
    NO_CARD = 5             # no reader, no card, card removed, several cards and none chosen
    CARD_PROBLEM = 6        # not an E-port card, held by another program, timeout, card error
    PIN_REFUSED = 7         # wrong PIN/PUK or format, not logged in, session expired
    BLOCKED = 8             # PIN or PUK blocked: the card centre must unblock it
    LAST_TRY_DECLINED = 9   # one try left and it was not confirmed: nothing was sent
    CERTIFICATE = 10        # expired, not yet valid or untrusted certificate
    SIGNATURE_INVALID = 11  # `eport verify`: the signature does not match
    REQUEST_REFUSED = 12    # the daemon refused the request (bad input, feature disabled)
    INPUT_ERROR = 13        # a file could not be read or written
    DATACENTER_UNAVAILABLE = 14  # `eport customs`: the data centre is not reachable
    VALIDATION_FAILED = 15  # `eport customs`: the document has bad or missing fields
    WRONG_CARD = 16         # `eport customs`: this card kind may not do that (e.g. declare)
    DOCUMENT_STATE = 17     # `eport customs`: no such document, or not in a state for that
    DATACENTER_REFUSED = 18  # `eport customs`: signature, replay or clock refused by the centre
    NOT_AUTHORIZED = 19     # `eport bonded`: acting for another enterprise without its grants
    DOCTOR_WARNINGS = 20    # `eport doctor`: warnings, no failures
    DOCTOR_FAILURES = 21    # `eport doctor`: at least one failure
    INTERRUPTED = 130       # Ctrl-C


# eportd's reasons (eport.v1.ErrorReason, the names its ErrorDetail carries) by exit code.
REASON_EXIT_CODES: dict[pb.ErrorReason.ValueType, ExitCode] = {
    pb.SERVICE_NOT_RUNNING: ExitCode.PCSC_UNAVAILABLE,
    pb.NO_READER: ExitCode.NO_CARD,
    pb.NO_CARD: ExitCode.NO_CARD,
    pb.CARD_REMOVED: ExitCode.NO_CARD,
    pb.AMBIGUOUS_CARD: ExitCode.NO_CARD,
    pb.UNSUPPORTED_CARD: ExitCode.CARD_PROBLEM,
    pb.SHARING_VIOLATION: ExitCode.CARD_PROBLEM,
    pb.CARD_TIMEOUT: ExitCode.CARD_PROBLEM,
    pb.CARD_ERROR: ExitCode.CARD_PROBLEM,
    pb.PIN_FORMAT: ExitCode.PIN_REFUSED,
    pb.PIN_INCORRECT: ExitCode.PIN_REFUSED,
    pb.PUK_INCORRECT: ExitCode.PIN_REFUSED,
    pb.NOT_AUTHENTICATED: ExitCode.PIN_REFUSED,
    pb.SESSION_EXPIRED: ExitCode.PIN_REFUSED,
    pb.PIN_BLOCKED: ExitCode.BLOCKED,
    pb.PUK_BLOCKED: ExitCode.BLOCKED,
    pb.PIN_LAST_ATTEMPT_GUARD: ExitCode.LAST_TRY_DECLINED,
    pb.CERT_EXPIRED: ExitCode.CERTIFICATE,
    pb.CERT_NOT_YET_VALID: ExitCode.CERTIFICATE,
    pb.CERT_UNTRUSTED: ExitCode.CERTIFICATE,
    pb.INVALID_ARGUMENT: ExitCode.REQUEST_REFUSED,
    pb.UNATTENDED_DISABLED: ExitCode.REQUEST_REFUSED,
    pb.DAEMON_SHUTTING_DOWN: ExitCode.DAEMON_UNAVAILABLE,
}


def exit_code_for_reason(reason: str) -> ExitCode:
    """The exit code of a reason named as in ErrorDetail; UNEXPECTED for one this client does not
    know (a newer eportd)."""
    try:
        return REASON_EXIT_CODES.get(pb.ErrorReason.Value(reason), ExitCode.UNEXPECTED)
    except ValueError:
        return ExitCode.UNEXPECTED
