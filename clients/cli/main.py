"""`eport`: the E-port card command line. Every command is a call to eportd.

main() is the one funnel: whatever goes wrong becomes one message with a remedy (or one JSON
document) and a documented exit code; a traceback only with --debug.
"""

from __future__ import annotations

import sys

import click

from eport.clients.cli.lazy_group import LazyCommand, LazyGroup
from eport.clients.kit.context import CliState
from eport.clients.kit.daemon_client import (
    DEFAULT_TIMEOUT_SECONDS,
    DaemonClient,
    choose_socket,
    is_call_error,
)
from eport.clients.kit.errors import CliError, from_rpc_error
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.output import Output
from eport.common.socket_location import SOCKET_ENV
from eport.common.text import Bilingual, detect_language

# Each command's module is imported only when that command runs: `eport sign` in a script
# does not pay for customs, bonded, auth and doctor (about 0.2 s per process). The short help
# is the command's docstring, first sentence; a unit test keeps the two the same.
COMMANDS: dict[str, LazyCommand] = {
    "readers": LazyCommand("eport.clients.cli.commands_readers:readers_command",
                           "List the card readers and what is in them."),
    "watch": LazyCommand("eport.clients.cli.commands_readers:watch_command",
                         "Show reader and card events as they happen, until Ctrl-C (JSON: one "
                         "line per event)."),
    "card": LazyCommand("eport.clients.cli.commands_readers:card_group",
                        "The card: what it is and whose it is."),
    "pin": LazyCommand("eport.clients.cli.commands_pin:pin_group",
                       "PIN tries, login, PIN change and unblock."),
    "cert": LazyCommand("eport.clients.cli.commands_cert:cert_group",
                        "The card's certificate: show, check, export."),
    "sign": LazyCommand("eport.clients.cli.commands_sign:sign_command",
                        "Sign FILE ('-' for stdin) on the card."),
    "verify": LazyCommand("eport.clients.cli.commands_sign:verify_command",
                          "Check a signature of FILE with a certificate (no PIN; the card is "
                          "not used)."),
    "decrypt": LazyCommand("eport.clients.cli.commands_decrypt:decrypt_command",
                           "Decrypt FILE ('-' for stdin), binary or base64, with the card's "
                           "envelope key: RSA PKCS#1 v1.5, or SM2 in the ASN.1 form of `openssl "
                           "pkeyutl` or as C1C3C2."),
    "doctor": LazyCommand("eport.clients.doctor.command:doctor_command",
                          "Check pcscd, drivers, USB, eportd, readers, cards and the clock; say "
                          "what is wrong and what to do."),
    "customs": LazyCommand("eport.clients.customs.commands:customs_group",
                           "报关申报: customs declarations and filing lists: new, import, save "
                           "(暂存), upload (上载), declare (申报), delete (删除), query, receipts, "
                           "print, statistics."),
    "auth": LazyCommand("eport.clients.auth.commands:auth_group",
                        "委托授权: grants between enterprises and to operator cards (e-book "
                        "manual §4)."),
    "bonded": LazyCommand("eport.clients.bonded.commands:bonded_group",
                          "保税核查: bonded verification: stock-taking data of processing-trade "
                          "enterprises."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", "socket_path", metavar="PATH", envvar=SOCKET_ENV,
              help=f"eportd's socket (default: ${SOCKET_ENV}, the per-user socket, then "
                   "/run/eportd/eportd.sock).")
@click.option("--json", "json_flag", is_flag=True, help="JSON output (also per command).")
@click.option("--lang", type=click.Choice(["zh", "en"]),
              help="Language of messages (default: from the locale, or $EPORT_LANG).")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT_SECONDS,
              show_default=True, help="Seconds to wait for eportd.")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(package_name="eport-middleware", prog_name="eport")
@click.pass_obj
def cli(state: CliState, socket_path: str | None, json_flag: bool, lang: str | None,
        timeout: float, debug: bool) -> None:
    """E-port (中国电子口岸) card tool: readers, card, PIN, certificate, signatures.

    Exit codes are listed in docs/cli.md.
    """
    if json_flag:
        state.output.json_mode = True
    if lang is not None:
        state.output.language = "zh" if lang == "zh" else "en"
    state.debug = debug
    state.client = DaemonClient(choose_socket(socket_path), timeout)




def main(argv: list[str] | None = None) -> int:
    from eport.common.funnel import CallbackReporter, ConsoleFailure, run_console

    args = list(sys.argv[1:] if argv is None else argv)
    # Known before click parses anything, so that even a usage error can answer in JSON.
    output = Output(json_mode="--json" in args, language=detect_language())
    state = CliState(output, DaemonClient(choose_socket(None)), debug="--debug" in args)

    def show(failure: ConsoleFailure, command: str) -> None:
        output.error(command, CliError(failure.code, failure.message, failure.remedy,
                                       ExitCode(failure.exit_code), failure.extra))

    def convert(error: BaseException) -> ConsoleFailure | None:
        if is_call_error(error):  # a call that did not go through DaemonClient.call
            error = from_rpc_error(error, state.client.socket)
        if isinstance(error, CliError):
            return ConsoleFailure(error.code, error.message, error.remedy, int(error.exit_code),
                                  error.extra)
        return None

    try:
        return run_console(
            "eport", lambda words: cli.main(words, prog_name="eport", standalone_mode=False,
                                             obj=state),
            args, exit_codes=ExitCode, reporter=CallbackReporter(show, output.note),
            convert=convert, click_failure_exit=int(ExitCode.INPUT_ERROR),
            debug_hint=Bilingual("请用 --debug 重试并报告输出",
                                 "retry with --debug and report the output"),
            command=lambda: state.command)
    finally:
        state.client.close()


if __name__ == "__main__":
    sys.exit(main())
