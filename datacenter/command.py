"""eport-datacenter: the reference E-port data centre (数据中心) endpoint.

    eport-datacenter [serve] --trust-anchor CA.pem [--db PATH] [--listen ADDRESS] ...
    eport-datacenter migrate [--db PATH]
    eport-datacenter ebook import FILE [--db PATH]      (JSON e-book records)
    eport-datacenter ebook list [--db PATH]
    eport-datacenter registry import FILE [--db PATH]   (JSON list or CSV)
    eport-datacenter registry list [--db PATH]
    eport-datacenter revoke (--certificate NUMBER | --card CARD_ID) [--reason TEXT] [--db PATH]
    eport-datacenter unrevoke (--certificate NUMBER | --card CARD_ID) [--db PATH]
    eport-datacenter revoked [--db PATH]                 (the deny-list)

`serve` is the default command. SIGTERM and SIGINT stop it gracefully; once it serves it
prints one line "eport-datacenter ready on ADDRESS" on stdout and reports SERVING through the
gRPC health service. Errors go through the shared funnel (eport.common.funnel); exit codes:
DataCenterExit, listed in docs/exit-codes.md.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import TypeVar

import click

from eport import __version__
from eport.common.customs.endpoint import default_datacenter_address
from eport.common.funnel import JSON_FLAG, run_console
from eport.common.stop_signals import StopSignals
from eport.datacenter import ebooks, revocation
from eport.datacenter import registry as enterprise_registry
from eport.datacenter.clock import from_micros, now, to_micros
from eport.datacenter.review import PolicyError, ReviewPolicy
from eport.datacenter.server import DataCenterSettings, ServerConfigError, run_server
from eport.datacenter.storage import (
    Connection,
    StorageError,
    Store,
    database_exists,
    is_postgres_url,
    open_store,
)
from eport.datacenter.tls import ServerTls
from eport.datacenter.trust import DEFAULT_MAX_CLOCK_SKEW

logger = logging.getLogger(__name__)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_GROUP_OPTIONS = ("--help", "-h", "--version")
_T = TypeVar("_T")


def default_db_path() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "eport-datacenter" / "datacenter.sqlite3")


def _database(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """--db: a postgresql:// URL as given, a file path made absolute-safe (not a directory)."""
    if is_postgres_url(value):
        return value
    if not value or Path(value).is_dir():
        raise click.BadParameter(f"{value!r} 不是数据库文件 / is not a database file: give a "
                                 "file path (SQLite) or a postgresql://USER@HOST/DATABASE URL")
    return value


class _ServeByDefault(click.Group):
    """`eport-datacenter --trust-anchor X` means `eport-datacenter serve --trust-anchor X`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((word for word in args if word != JSON_FLAG), None)
        if first is None or (first not in self.commands and first not in _GROUP_OPTIONS):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


def _policy(_ctx: click.Context, _param: click.Parameter, value: str) -> ReviewPolicy:
    try:
        return ReviewPolicy.parse(value)
    except PolicyError as error:
        raise click.BadParameter(str(error)) from None


_db_option = click.option("--db", "db_path", callback=_database, default=default_db_path,
                          show_default="$XDG_DATA_HOME/eport-datacenter/datacenter.sqlite3",
                          help="The SQLite database file (created when missing), or a "
                          "PostgreSQL database as postgresql://USER[:PASSWORD]@HOST[:PORT]/NAME "
                          "(the schema is created in it; see docs/datacenter.md).")


# The funnel reads --json from the command line itself (common/funnel.py); the option only
# keeps click from refusing it, so that a failure, not the flag, is what the document says.
_json_option = click.option(JSON_FLAG, "json_errors", is_flag=True, expose_value=False,
                            help="Say a failure as one JSON document on stdout "
                            "(docs/exit-codes.md).")


@click.group(cls=_ServeByDefault, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eport-datacenter")
@_json_option
def cli() -> None:
    """The reference E-port data centre: accepts signed customs declarations."""


@cli.command()
@_db_option
@_json_option
@click.option("--listen", default=default_datacenter_address, show_default="$EPORT_DATACENTER "
              "or unix:$XDG_RUNTIME_DIR/eport-datacenter/datacenter.sock",
              help="unix:/path, /path or host:port.")
@click.option("--trust-anchor", "trust_anchors", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="PEM (or DER) certificates of the card CAs; repeatable; a directory works "
              "(its *.crl files are the CAs' revocation lists).")
@click.option("--review", default="accept", callback=_policy, show_default=True,
              help="accept | reject:CODE[:TEXT] | reject-first:CODE[:TEXT]")
@click.option("--review-delay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds between a declaration and its review receipt.")
@click.option("--max-clock-skew", type=click.FloatRange(min=1), default=DEFAULT_MAX_CLOCK_SKEW,
              show_default=True, help="Seconds a request's signed_at may differ from our clock.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="The server certificate (PEM, chain after it) for TLS; needed off loopback.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The private key of --tls-cert (unencrypted PEM).")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="CA certificates (PEM) clients must present a certificate from.")
@click.option("--log-level", type=click.Choice(_LOG_LEVELS, case_sensitive=False),
              default="INFO", show_default=True)
def serve(db_path: str, listen: str, trust_anchors: tuple[Path, ...], review: ReviewPolicy,
          review_delay: float, max_clock_skew: float, tls_cert: Path | None,
          tls_key: Path | None, tls_client_ca: Path | None, log_level: str) -> None:
    """Serve the data centre until SIGTERM or SIGINT (the default command)."""
    _configure_logging(log_level)
    tls = _server_tls(tls_cert, tls_key, tls_client_ca)
    settings = DataCenterSettings(db_path=db_path, listen=listen, trust_anchors=trust_anchors,
                                  review=review, review_delay=review_delay,
                                  max_clock_skew=max_clock_skew,
                                  tls=tls)
    with StopSignals.installed() as stop:
        try:
            with run_server(settings) as running:
                click.echo(f"eport-datacenter ready on {running.address}")
                sys.stdout.flush()
                stop.wait()
                logger.info("received %s; stopping", ", ".join(stop.received) or "a request")
                running.stop(grace=5.0)
        except (ServerConfigError, StorageError) as error:
            raise click.ClickException(str(error)) from None


def _server_tls(certificate: Path | None, key: Path | None, client_ca: Path | None
                ) -> ServerTls | None:
    if certificate is None and key is None:
        if client_ca is not None:
            raise click.UsageError("--tls-client-ca 需要 --tls-cert 和 --tls-key / needs "
                                   "--tls-cert and --tls-key (client certificates are asked "
                                   "for in a TLS handshake).")
        return None
    if certificate is None or key is None:
        raise click.UsageError("--tls-cert 和 --tls-key 须同时给出 / give both --tls-cert and "
                               "--tls-key.")
    return ServerTls(certificate, key, client_ca)


@cli.command()
@_db_option
@_json_option
def migrate(db_path: str) -> None:
    """Create the database or bring its schema up to date, then exit."""
    try:
        store = open_store(db_path)
    except StorageError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{store.description}: schema version {store.schema_version}")
    store.close()


@cli.group()
def registry() -> None:
    """The enterprise registry (企业名录): customs code → credit code and name, which
    inter-enterprise grants take the agent's data from."""


def _open_store(db_path: str, *, must_exist: bool = False) -> Store:
    """The store for an admin command; with must_exist, a missing file is an error rather
    than a new empty database (a listing of a mistyped path should not create it)."""
    try:
        missing = must_exist and not database_exists(db_path)
    except StorageError as error:
        raise click.ClickException(str(error)) from None
    if missing:
        raise click.ClickException(f"没有数据中心数据库 / {_shown(db_path)} does not exist or "
                                   "holds no data centre database. Remedy: check --db.")
    try:
        return open_store(db_path)
    except StorageError as error:
        raise click.ClickException(str(error)) from None


def _shown(db: str) -> str:
    """The database for a message: a PostgreSQL URL without its password."""
    if is_postgres_url(db):
        from eport.datacenter.storage_postgres import redacted

        return redacted(db)
    return db


def _read_store(db_path: str, query: Callable[[Connection], _T]) -> _T:
    """What `query` reads from the existing database at db_path (a listing command's)."""
    store = _open_store(db_path, must_exist=True)
    try:
        with store.read() as connection:
            return query(connection)
    finally:
        store.close()


@registry.command("import")
@_db_option
@_json_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def registry_import(db_path: str, file: Path) -> None:
    """Add or update enterprises from FILE: a JSON list of {"customs_code", "credit_code",
    "name"} or CSV lines customs_code,credit_code,name (header optional). Nothing is written
    when any entry is bad."""
    try:
        entries = enterprise_registry.read_registry_file(file)
    except enterprise_registry.RegistryFileError as error:
        raise click.ClickException(f"{file}: {error}") from None
    store = _open_store(db_path)
    try:
        with store.write() as connection:
            written = enterprise_registry.import_enterprises(connection, entries,
                                                             to_micros(now()))
    finally:
        store.close()
    click.echo(f"{file}: {len(entries)} enterprise(s), {written} new or changed")


@registry.command("list")
@_db_option
@_json_option
def registry_list(db_path: str) -> None:
    """Print the registry: customs code, credit code and name, tab-separated."""
    enterprises = _read_store(db_path, enterprise_registry.all_enterprises)
    for enterprise in enterprises:
        click.echo(f"{enterprise.customs_code}\t{enterprise.credit_code}\t{enterprise.name}")


@cli.group()
def ebook() -> None:
    """E-book records (电子账册): the record items bonded verification items must match."""


@ebook.command("import")
@_db_option
@_json_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ebook_import(db_path: str, file: Path) -> None:
    """Add or replace e-books from FILE: JSON {"ebook_number", "enterprise_code", "items":
    [{"record_item_number", "hs_code", "name", "specification", "unit"}]} or a list of those.
    An e-book imported again gets the new items; nothing is written when any entry is bad."""
    try:
        books = ebooks.read_ebook_file(file)
    except ebooks.EBookFileError as error:
        raise click.ClickException(f"{error}. Remedy: correct the file and import it again.") \
            from None
    store = _open_store(db_path)
    try:
        with store.write() as connection:
            ebooks.import_ebooks(connection, books)
    except ebooks.EBookFileError as error:
        raise click.ClickException(f"{file}: {error}") from None
    finally:
        store.close()
    items = sum(len(book.items) for book in books)
    click.echo(f"{file}: {len(books)} e-book(s), {items} record item(s)")


@ebook.command("list")
@_db_option
@_json_option
def ebook_list(db_path: str) -> None:
    """Print the e-books: number, enterprise and item count, tab-separated."""
    summaries = _read_store(db_path, ebooks.list_ebooks)
    for summary in summaries:
        click.echo(f"{summary.ebook_number}\t{summary.enterprise_code}\t"
                   f"{summary.item_count} item(s)")


def _revocation_target(certificate: str | None, card: str | None) -> tuple[str, str]:
    if (certificate is None) == (card is None):
        raise click.UsageError("name exactly one of --certificate NUMBER and --card CARD_ID")
    return ("certificate", certificate) if certificate is not None else ("card", str(card))


_certificate_option = click.option(
    "--certificate", metavar="NUMBER",
    help="The certificate number (证书号, the serial in hex) of one certificate.")
_card_option = click.option(
    "--card", metavar="CARD_ID",
    help="The card id (卡号): every certificate of that card, also after a renewal.")


@cli.command()
@_db_option
@_json_option
@_certificate_option
@_card_option
@click.option("--reason", default="", help="A note for the listing (e.g. 挂失 lost).")
def revoke(db_path: str, certificate: str | None, card: str | None, reason: str) -> None:
    """Refuse a certificate or a card from now on (the data centre's deny-list; the CAs' own
    lists are the *.crl files of the trust directory). Takes effect at once, also while the
    server runs."""
    kind, value = _revocation_target(certificate, card)
    store = _open_store(db_path)
    try:
        with store.write() as connection:
            entry, created = revocation.revoke(connection, kind, value, reason.strip(),
                                               to_micros(now()))
    except revocation.RevocationInputError as error:
        raise click.BadParameter(str(error), param_hint=f"--{kind}") from None
    finally:
        store.close()
    since = from_micros(entry.revoked_at).isoformat(timespec="seconds")
    click.echo(f"revoked {kind} {entry.value}" if created
               else f"{kind} {entry.value} was already revoked (since {since})")


@cli.command()
@_db_option
@_json_option
@_certificate_option
@_card_option
def unrevoke(db_path: str, certificate: str | None, card: str | None) -> None:
    """Take a certificate or a card off the deny-list (a CA's CRL still counts)."""
    kind, value = _revocation_target(certificate, card)
    store = _open_store(db_path, must_exist=True)
    try:
        with store.write() as connection:
            removed = revocation.unrevoke(connection, kind, value)
    except revocation.RevocationInputError as error:
        raise click.BadParameter(str(error), param_hint=f"--{kind}") from None
    finally:
        store.close()
    if not removed:
        raise click.ClickException(
            f"{kind} {value} is not on the deny-list / 不在数据中心的停用名单中. Remedy: check "
            "the number with `eport-datacenter revoked`.")
    click.echo(f"unrevoked {kind} {revocation.normalise(kind, value)}")


@cli.command()
@_db_option
@_json_option
def revoked(db_path: str) -> None:
    """Print the deny-list: kind, certificate number or card id, since when (UTC), reason;
    tab-separated."""
    entries = _read_store(db_path, revocation.all_revocations)
    for entry in entries:
        since = from_micros(entry.revoked_at).isoformat(timespec="seconds")
        click.echo(f"{entry.kind}\t{entry.value}\t{since}\t{entry.reason}")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class DataCenterExit(IntEnum):
    OK = 0
    UNEXPECTED = 1
    FAILED = 1       # cannot serve or do the command (database, trust anchors, TLS, listen)
    USAGE = 2
    INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    return run_console(
        "eport-datacenter",
        lambda args: cli.main(args=args, prog_name="eport-datacenter", standalone_mode=False),
        argv, exit_codes=DataCenterExit)


if __name__ == "__main__":
    sys.exit(main())
