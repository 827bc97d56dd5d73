"""eportd's backend configuration (daemon/backend_config.py): the --config TOML file and the
flags, what each combination runs, and a clear bilingual refusal, with a remedy, of each
mistake a person writing the file or the command line can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from eport.daemon.backend_config import backend_specs, from_file
from eport.daemon.config import BackendSpec
from eport.daemon.server.socket_path import ServerConfigError

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def specs(config: Path | None = None, *, backends: tuple[str, ...] = (),
          modules: tuple[str, ...] = (), sm2: str | None = None,
          remotes: tuple[str, ...] = (), insecure: bool = False) -> tuple[BackendSpec, ...]:
    return backend_specs(str(config) if config else None, list(backends), list(modules), sm2,
                         list(remotes), insecure)


def refused(call: object) -> ServerConfigError:
    with pytest.raises(ServerConfigError) as caught:
        call()  # type: ignore[operator]
    error = caught.value
    assert error.message.zh and error.message.en and error.remedy.zh and error.remedy.en
    assert "解决办法" in error.text.zh or "请用" in error.text.zh, error.text.zh
    assert "Remedy" in error.text.en or "instead" in error.text.en, error.text.en
    return error


def test_nothing_configured_runs_pcsc_alone() -> None:
    assert specs() == (BackendSpec("pcsc"),)


def test_the_file_and_the_flags_add_up_and_a_backend_named_twice_is_one(
        tmp_path: Path) -> None:
    config = tmp_path / "eportd.toml"
    config.write_text(f'''
[[backend]]
kind = "pcsc"

[[backend]]
kind = "pkcs11"
module = "{MODULE}"
sm2_mechanism = "0x80000001"

[[backend]]
kind = "remote"
url = "ws://127.0.0.1:61232"
''', encoding="utf-8")
    got = specs(config, backends=("pcsc",), remotes=("ws://10.0.0.5:61232",), insecure=True)
    assert got == (
        BackendSpec("pcsc"),
        BackendSpec("pkcs11", (("module_path", MODULE), ("sm2_mechanism", 0x80000001))),
        BackendSpec("remote", (("url", "ws://127.0.0.1:61232"), ("allow_insecure", False))),
        BackendSpec("remote", (("url", "ws://10.0.0.5:61232"), ("allow_insecure", True))))


def test_flags_alone_run_only_what_they_name() -> None:
    assert specs(modules=(MODULE,), sm2="2147483649") == (
        BackendSpec("pkcs11", (("module_path", MODULE), ("sm2_mechanism", 0x80000001))),)


@pytest.mark.parametrize(("text", "says"), [
    ('[[backend]]\nkind = "usb"\n', "unknown kind 'usb'"),
    ('[[backend]]\nkind = "pkcs11"\n', "has no module"),
    ('[[backend]]\nkind = "pkcs11"\nmodule = "/x.so"\nsm2_mechanism = "sm2"\n', "not a number"),
    ('[[backend]]\nkind = "remote"\n', "has no url"),
    ('backend = "pcsc"\n', "[[backend]] tables"),
    ('[[backend]\nkind = ', "not valid TOML")])
def test_a_bad_file_is_refused_with_its_place_and_remedy(tmp_path: Path, text: str,
                                                          says: str) -> None:
    config = tmp_path / "eportd.toml"
    config.write_text(text, encoding="utf-8")
    error = refused(lambda: from_file(config))
    assert says in error.text.en and str(config) in error.text.en


def test_a_missing_file_is_refused() -> None:
    error = refused(lambda: specs(Path("/nonexistent/eportd.toml")))
    assert "Cannot read the configuration file /nonexistent/eportd.toml" in error.text.en


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"backends": ("pkcs11",)}, "--pkcs11-module or --remote-client"),
    ({"sm2": "0x80000001"}, "needs --pkcs11-module"),
    ({"modules": (MODULE,), "sm2": "zero"}, "not a number")])
def test_bad_flags_are_refused(kwargs: dict[str, object], says: str) -> None:
    error = refused(lambda: specs(**kwargs))  # type: ignore[arg-type]
    assert says in error.text.en


def test_call_timeout_of_a_pkcs11_backend_is_read_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "eportd.toml"
    config.write_text(f'[[backend]]\nkind = "pkcs11"\nmodule = "{MODULE}"\ncall_timeout = 7.5\n')
    assert specs(config) == (BackendSpec("pkcs11", (("module_path", MODULE),
                                                    ("call_timeout", 7.5))),)
    for bad in ("0", "-1", '"soon"', "true", "7200"):
        config.write_text(f'[[backend]]\nkind = "pkcs11"\nmodule = "{MODULE}"\n'
                          f"call_timeout = {bad}\n")
        error = refused(lambda: specs(config))
        assert "call_timeout" in error.text.en and "seconds" in error.text.en


def test_two_pkcs11_modules_run_side_by_side_each_named_by_its_module() -> None:
    from eport.cardlib.pkcs11.hosted import HostedPkcs11Backend
    from eport.daemon.service.backends import BackendRegistry, backend_kind

    alone = BackendRegistry([HostedPkcs11Backend(MODULE)])
    assert alone.names == ["pkcs11"]  # one of a kind keeps the plain name
    both = BackendRegistry([HostedPkcs11Backend(MODULE),
                            HostedPkcs11Backend("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")])
    assert both.names == ["pkcs11:libsofthsm2.so", "pkcs11:opensc-pkcs11.so"]
    assert {backend_kind(name) for name in both.names} == {"pkcs11"}
    reader = "pkcs11:opensc-pkcs11.so:0 PIV_II"
    owner = both.owner_of(reader)
    assert owner is not None and owner.name == "pkcs11:opensc-pkcs11.so"
    # Two modules of one file name would show readers of one name: refused, with a remedy.
    with pytest.raises(ServerConfigError) as same_name:
        BackendRegistry([HostedPkcs11Backend(MODULE),
                         HostedPkcs11Backend("/opt/other/libsofthsm2.so")])
    assert "different file names" in same_name.value.remedy.en
