"""`eport cert show | check | export`."""

from __future__ import annotations

import base64
from typing import Any

import click

from eport.clients.cli.commands_readers import show_validity
from eport.clients.kit.context import card_options, command_name, json_option, state
from eport.clients.kit.daemon_client import selector
from eport.clients.kit.errors import CliError
from eport.clients.kit.exit_codes import ExitCode
from eport.clients.kit.files import read_input, write_output
from eport.clients.kit.output import Output
from eport.clients.kit.views import certificate_view, check_view
from eport.common.messages import CARD_CENTRE_RENEW
from eport.common.text import Bilingual
from eport.protos.v1 import eportd_pb2 as pb

CHAIN_NAMES = {
    pb.TRUSTED: Bilingual("可信", "trusted"),
    pb.UNTRUSTED: Bilingual("不可信", "NOT trusted"),
    pb.NO_ANCHORS: Bilingual("未配置根证书, 未检查", "not checked: no trust anchors configured"),
}


def show_check(out: Output, check: pb.CertificateCheck) -> None:
    out.labelled(Bilingual("主题", "Subject"), check.subject)
    out.labelled(Bilingual("颁发者", "Issuer"), check.issuer)
    out.labelled(Bilingual("序列号", "Serial"), check.serial_hex)
    show_validity(out, check)
    chain = CHAIN_NAMES.get(check.chain, Bilingual("?", "?"))
    style = "bold red" if check.chain == pb.UNTRUSTED else None
    detail = f" ({check.chain_detail})" if check.chain_detail else ""
    out.labelled(Bilingual("证书链", "Chain"), f"{out.text(chain)}{detail}", style=style)


def problem_of(check: pb.CertificateCheck) -> CliError | None:
    """A certificate a signature cannot rely on, as the error `cert check` exits with."""
    if check.state == pb.EXPIRED:
        return CliError("CERT_EXPIRED", Bilingual(check.message_zh or "证书已过期",
                                                  check.message_en or "The certificate expired"),
                        CARD_CENTRE_RENEW,
                        ExitCode.CERTIFICATE)
    if check.state == pb.NOT_YET_VALID:
        return CliError("CERT_NOT_YET_VALID",
                        Bilingual("证书尚未生效", "The certificate is not valid yet"),
                        Bilingual("请检查本机日期和时间是否正确",
                                  "check this computer's date and time"), ExitCode.CERTIFICATE)
    if check.chain == pb.UNTRUSTED:
        return CliError("CERT_UNTRUSTED",
                        Bilingual(f"证书链不可信: {check.chain_detail}",
                                  f"The certificate chain is not trusted: {check.chain_detail}"),
                        Bilingual("请确认卡片来自电子口岸制卡中心, 并检查 eportd 的 "
                                  "--trust-anchor 配置",
                                  "make sure the card comes from the E-port card centre and "
                                  "check eportd's --trust-anchor setting"),
                        ExitCode.CERTIFICATE)
    return None


@click.group("cert")
def cert_group() -> None:
    """The card's certificate: show, check, export."""


ENVELOPE_OPTION = click.option(
    "--envelope", is_flag=True,
    help="The envelope (encryption, 加密证书) certificate instead of the signing one; RSA and "
         "SM2 cards have one.")


def _certificate(envelope: bool, reader: str | None, card_id: str | None) -> pb.Certificate:
    card = selector(reader, card_id)
    client = state().client
    return client.envelope_certificate(card) if envelope else client.certificate(card)


@cert_group.command("show")
@ENVELOPE_OPTION
@card_options
@json_option
def show_command(envelope: bool, reader: str | None, card_id: str | None) -> None:
    """The signing certificate (or with --envelope the envelope one): subject, issuer,
    validity and chain."""
    cli = state()
    certificate = _certificate(envelope, reader, card_id)

    def human(out: Output) -> None:
        out.labelled(Bilingual("证书号", "Certificate"), certificate.certificate_number)
        show_check(out, certificate.check)

    cli.output.result(command_name(), certificate_view(certificate), human)


@cert_group.command("check")
@click.argument("certificate_file", required=False, metavar="[FILE]")
@card_options
@json_option
def check_command(certificate_file: str | None, reader: str | None, card_id: str | None
                  ) -> None:
    """Check the card's certificate, or a certificate file (PEM or DER); exits 10 when it is
    expired, not yet valid or untrusted."""
    cli = state()
    if certificate_file is not None:
        check = cli.client.call(cli.client.stub.CheckCertificate, pb.CheckCertificateRequest(
            certificate=read_input(certificate_file)))
        data: dict[str, Any] = {"card_id": None, "certificate_number": None,
                                "check": check_view(check)}
    else:
        certificate = cli.client.certificate(selector(reader, card_id))
        check = certificate.check
        data = certificate_view(certificate)
    problem = problem_of(check)
    if problem is None:
        cli.output.result(command_name(), data, lambda out: show_check(out, check))
        return
    # A failed check is an error like any other (exit 10, the reason as error.code in JSON,
    # message and remedy on stderr), after the report for people and with it for scripts.
    if not cli.output.json_mode:
        show_check(cli.output, check)
    problem.extra.update(data)
    raise problem


@cert_group.command("export")
@click.option("-o", "--output", "output_path", default="-", metavar="FILE",
              help="Write here (default: standard output).")
@click.option("--format", "encoding", type=click.Choice(["pem", "der"]), default="pem",
              show_default=True)
@ENVELOPE_OPTION
@card_options
@json_option
def export_command(output_path: str, encoding: str, envelope: bool, reader: str | None,
                   card_id: str | None) -> None:
    """Export the card's certificate (public data only), e.g. for `openssl` checks; with
    --envelope the one others encrypt to (`openssl pkeyutl -encrypt -certin`)."""
    cli = state()
    certificate = _certificate(envelope, reader, card_id)
    payload = certificate.pem.encode() if encoding == "pem" else certificate.der
    if not cli.output.json_mode or output_path != "-":
        write_output(output_path, payload)
    data = {"card_id": certificate.card_id, "certificate_number": certificate.certificate_number,
            "format": encoding, "output": None if output_path == "-" else output_path,
            "pem": certificate.pem, "der_base64": base64.b64encode(certificate.der).decode(),
            "envelope": envelope}

    def human(out: Output) -> None:
        if output_path != "-":
            out.note(Bilingual(f"证书已写入 {output_path}",
                               f"Certificate written to {output_path}"))

    cli.output.result(command_name(), data, human)
