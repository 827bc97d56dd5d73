"""`eport`: the E-port card command line. Every command is a call to eportd.

main() is the one funnel: whatever goes wrong becomes one message with a remedy (or one JSON
document) and a documented exit code; a traceback only with --debug.
"""

from __future__ import annotations

import sys
import traceback

import click
import grpc

from eport.clients.auth.commands import auth_group
from eport.clients.bonded.commands import bonded_group
from eport.clients.cli.commands_cert import cert_group
from eport.clients.cli.commands_decrypt import decrypt_command
from eport.clients.cli.commands_pin import pin_group
from eport.clients.cli.commands_readers import card_group, readers_command, watch_command
from eport.clients.cli.commands_sign import sign_command, verify_command
from eport.clients.cli.context import CliState
from eport.clients.cli.daemon_client import DEFAULT_TIMEOUT_SECONDS, DaemonClient, choose_socket
from eport.clients.cli.errors import CliError, from_rpc_error
from eport.clients.cli.exit_codes import ExitCode
from eport.clients.cli.language import Bilingual, detect_language
from eport.clients.cli.output import Output
from eport.clients.customs.commands import customs_group
from eport.clients.doctor.command import doctor_command
from eport.common.socket_location import SOCKET_ENV


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


cli.add_command(readers_command)
cli.add_command(watch_command)
cli.add_command(card_group)
cli.add_command(pin_group)
cli.add_command(cert_group)
cli.add_command(sign_command)
cli.add_command(verify_command)
cli.add_command(decrypt_command)
cli.add_command(doctor_command)
cli.add_command(customs_group)
cli.add_command(auth_group)
cli.add_command(bonded_group)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Known before click parses anything, so that even a usage error can answer in JSON.
    output = Output(json_mode="--json" in args, language=detect_language())
    state = CliState(output, DaemonClient(choose_socket(None)), debug="--debug" in args)
    try:
        result = cli.main(args, prog_name="eport", standalone_mode=False, obj=state)
        return int(result) if isinstance(result, int) else int(ExitCode.OK)
    except CliError as error:
        output.error(state.command, error)
        return int(error.exit_code)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as problem:
        if output.json_mode:
            output.error(state.command, CliError(
                "USAGE", Bilingual(problem.format_message(), problem.format_message()),
                Bilingual("运行 eport --help 查看用法", "see `eport --help`"), ExitCode.USAGE))
        else:
            problem.show()
        return int(ExitCode.USAGE) if isinstance(problem, click.UsageError) else int(
            ExitCode.INPUT_ERROR)
    except (click.Abort, KeyboardInterrupt):
        output.note(Bilingual("已取消", "Cancelled"))
        return int(ExitCode.INTERRUPTED)
    except grpc.RpcError as error:  # a call that did not go through DaemonClient.call
        converted = from_rpc_error(error, state.client.socket)
        output.error(state.command, converted)
        return int(converted.exit_code)
    except Exception as unexpected:
        if state.debug:
            traceback.print_exc()
        output.error(state.command, CliError(
            "UNEXPECTED", Bilingual(f"意外错误: {type(unexpected).__name__}",
                                    f"Unexpected error: {type(unexpected).__name__}"),
            Bilingual("请用 --debug 重试并报告输出", "retry with --debug and report the output"),
            ExitCode.UNEXPECTED))
        return int(ExitCode.UNEXPECTED)
    finally:
        state.client.close()


if __name__ == "__main__":
    sys.exit(main())
