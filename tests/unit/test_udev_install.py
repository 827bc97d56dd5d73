"""The udev rules, the polkit rule and udev/install.sh, always run into a staged root here."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from eport.daemon.usb.enumeration import CCID_CLASS, KNOWN_EPORT_KEYS

UDEV = Path(__file__).resolve().parents[2] / "udev"
RULES = UDEV / "rules.d" / "70-eport.rules"
POLKIT = UDEV / "polkit" / "60-eport.rules"
INSTALL = UDEV / "install.sh"
UNITS = {kind: sorted(p for p in (UDEV / "systemd" / kind).iterdir() if p.is_file())
         for kind in ("system", "user")}

# The keys a rule of ours may use, and the operators each may take; a typo such as ATTRS{idvendor}
# or GROUP=="eport" (a match, not an assignment) would otherwise be accepted by udev in silence.
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "DRIVER", "DRIVERS", "ENV", "ATTR",
              "ATTRS", "TAG"}
ASSIGN_KEYS = {"MODE", "GROUP", "OWNER", "TAG", "ENV", "ATTR", "RUN", "OPTIONS"}
MATCH_OPS, ASSIGN_OPS = {"==", "!="}, {"=", "+=", ":="}
PAIR = re.compile(r'(?P<key>[A-Z]+)(?:\{(?P<attr>[A-Za-z0-9_]+)\})?(?P<op>==|!=|\+=|:=|=)'
                  r'"(?P<value>[^"]*)"')
HEX4 = re.compile(r"[0-9a-f]{4}")

Rule = list[tuple[str, str, str]]  # (key with its {attribute}, operator, value)


def parse_rule(line: str, number: int) -> Rule:
    """A rule line as comma-separated KEY op "value" pairs; fails on anything else."""
    pairs: Rule = []
    for part in line.split(", "):
        match = PAIR.fullmatch(part)
        assert match, f"70-eport.rules:{number}: not a KEY op \"value\" pair: {part!r}"
        key, attr, op = match["key"], match["attr"], match["op"]
        if op in MATCH_OPS:
            assert key in MATCH_KEYS, f"70-eport.rules:{number}: {key} is not a match key"
        else:
            assert key in ASSIGN_KEYS, f"70-eport.rules:{number}: {key} is not an assignment"
        assert (attr is not None) == (key in {"ENV", "ATTR", "ATTRS"}), (
            f"70-eport.rules:{number}: {key} {'needs' if attr is None else 'takes no'} {{...}}")
        pairs.append((f"{key}{{{attr}}}" if attr else key, op, match["value"]))
    return pairs


def rules() -> list[Rule]:
    parsed = []
    for number, raw in enumerate(RULES.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.endswith("\\"), f"70-eport.rules:{number}: continuation lines not expected"
        parsed.append(parse_rule(line, number))
    return parsed


def matches(rule: Rule) -> dict[str, str]:
    return {key: value for key, op, value in rule if op == "=="}


def test_every_rule_gives_the_device_to_the_group_and_the_seat() -> None:
    parsed = rules()
    assert parsed
    for rule in parsed:
        assert ("ACTION", "==", "add|change") in rule
        assert ("SUBSYSTEM", "==", "usb") in rule
        assert ("ENV{DEVTYPE}", "==", "usb_device") in rule
        assert ("MODE", "=", "0660") in rule
        assert ("GROUP", "=", "eport") in rule
        assert ("TAG", "+=", "uaccess") in rule


def test_ccid_class_devices_are_covered() -> None:
    pattern = f"*:{CCID_CLASS:02x}????:*"
    assert pattern == "*:0b????:*"
    ccid = [rule for rule in rules() if matches(rule).get("ENV{ID_USB_INTERFACES}") == pattern]
    assert len(ccid) == 1
    # A class rule matches every vendor: it must not be narrowed to one.
    assert not any(key.startswith("ATTR") for key in matches(ccid[0]))


def test_rules_cover_exactly_the_known_keys() -> None:
    covered: list[tuple[int, int | None]] = []
    for rule in rules():
        ids = matches(rule)
        if "ATTR{idVendor}" not in ids:
            continue
        vendor, product = ids["ATTR{idVendor}"], ids.get("ATTR{idProduct}")
        # udev compares the sysfs text, which is four lowercase hex digits.
        assert HEX4.fullmatch(vendor), vendor
        assert product is None or HEX4.fullmatch(product), product
        covered.append((int(vendor, 16), None if product is None else int(product, 16)))
    assert len(covered) == len(set(covered)), "a key has two rules"
    assert set(covered) == {(key.vendor_id, key.product_id) for key in KNOWN_EPORT_KEYS}


def test_rules_run_before_the_seat_acl_is_applied() -> None:
    # 73-seat-late.rules turns TAG+="uaccess" into an ACL; a tag set later has no effect.
    assert RULES.name < "73-seat-late.rules"


def test_polkit_rule_lets_the_group_use_pcscd() -> None:
    text = POLKIT.read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    assert code.count("polkit.addRule(") == 1
    assert 'action.id == "org.debian.pcsc-lite.access_pcsc"' in code
    assert 'action.id == "org.debian.pcsc-lite.access_card"' in code
    assert 'subject.isInGroup("eport")' in code
    assert "polkit.Result.YES" in code
    assert code.count("(") == code.count(")") and code.count("{") == code.count("}")


def _udevadm_verify() -> tuple[str | None, str]:
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        return None, "udevadm is not installed"
    probe = subprocess.run([udevadm, "verify", "--help"], capture_output=True, text=True,
                           timeout=30, check=False)
    if probe.returncode != 0:
        return None, "this udevadm has no verify command (systemd < 254)"
    return udevadm, ""


UDEVADM, NO_VERIFY_REASON = _udevadm_verify()


@pytest.mark.skipif(UDEVADM is None, reason=NO_VERIFY_REASON)
def test_udevadm_verify_accepts_the_rules() -> None:
    assert UDEVADM is not None
    # Names are not resolved: the group eport need not exist on the machine running the tests.
    result = subprocess.run([UDEVADM, "verify", "--resolve-names=never", str(RULES)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- install.sh, into a staged root only ---------------------------------------------------------

GUARDED = ("groupadd", "getent", "udevadm", "systemctl", "usermod")


@pytest.fixture
def staging(tmp_path: Path) -> dict[str, Path]:
    """A staged root, a fake venv with an eportd script, and a PATH whose groupadd, getent,
    udevadm and systemctl only record that they were called: a staged install must not touch
    the host's groups nor reload anything."""
    root, venv, fakebin = tmp_path / "root", tmp_path / "venv", tmp_path / "fakebin"
    (venv / "bin").mkdir(parents=True)
    (root / "etc").mkdir(parents=True)
    eportd = venv / "bin" / "eportd"
    eportd.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    eportd.chmod(0o755)
    fakebin.mkdir()
    calls = tmp_path / "calls.log"
    for name in GUARDED:
        fake = fakebin / name
        fake.write_text(f'#!/bin/sh\necho "{name} $*" >>"{calls}"\nexit 1\n', encoding="utf-8")
        fake.chmod(0o755)
    return {"root": root, "venv": venv, "fakebin": fakebin, "calls": calls}


def run_install(staging: dict[str, Path], *args: str, destdir: bool = False
                ) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DESTDIR"}
    env["PATH"] = f"{staging['fakebin']}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    where = ["--prefix", str(staging["root"])]
    if destdir:  # the same staged root, given the make-install way
        env["DESTDIR"], where = str(staging["root"]), []
    return subprocess.run(["bash", str(INSTALL), *where, "--venv", str(staging["venv"]), *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def expected_files(root: Path) -> dict[Path, Path]:
    """Installed path -> source in the repository."""
    files = {
        root / "etc/udev/rules.d/70-eport.rules": RULES,
        root / "etc/polkit-1/rules.d/60-eport.rules": POLKIT,
    }
    for kind, units in UNITS.items():
        files.update({root / "etc/systemd" / kind / unit.name: unit for unit in units})
    return files


def statuses(output: str) -> dict[str, str]:
    """The install report, "STATUS 中文 PATH[ -> TARGET]", as PATH -> STATUS."""
    report = {}
    for line in output.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("installed", "updated", "unchanged"):
            report[rest.split(None, 1)[1].split(" -> ")[0]] = status
    return report


def snapshot(root: Path) -> dict[str, int]:
    return {str(path): path.lstat().st_mtime_ns for path in root.rglob("*")}


def test_install_twice_installs_then_changes_nothing(staging: dict[str, Path]) -> None:
    root, venv = staging["root"], staging["venv"]
    files = expected_files(root)
    assert len(files) == 2 + len(UNITS["system"]) + len(UNITS["user"]) >= 6

    first = run_install(staging, "--no-reload")
    assert first.returncode == 0, first.stdout + first.stderr
    report = statuses(first.stdout)
    for target, source in files.items():
        assert report.get(str(target)) == "installed", first.stdout
        assert target.read_bytes() == source.read_bytes()
        assert stat.S_IMODE(target.stat().st_mode) == 0o644, target
    link = root / "usr/local/bin/eportd"
    assert report.get(str(link)) == "installed", first.stdout
    assert link.is_symlink() and os.readlink(link) == str(venv / "bin" / "eportd")
    assert not (root / "usr/local/bin/eport").exists()  # not in this venv: no dangling link
    assert "usermod -aG eport" in first.stdout
    assert "systemctl enable --now eportd.socket" in first.stdout
    # Nothing else was written, no temporary file left behind.
    written = {p for p in root.rglob("*") if not p.is_dir()}
    assert written == {*files, link}
    before = snapshot(root)

    second = run_install(staging, "--no-reload", destdir=True)
    assert second.returncode == 0, second.stdout + second.stderr
    report = statuses(second.stdout)
    assert set(report) == {*map(str, files), str(link)}
    assert set(report.values()) == {"unchanged"}, second.stdout
    assert snapshot(root) == before
    assert not staging["calls"].exists(), staging["calls"].read_text(encoding="utf-8")


def test_install_updates_a_changed_file_and_relinks(staging: dict[str, Path]) -> None:
    root, venv = staging["root"], staging["venv"]
    assert run_install(staging).returncode == 0
    rules = root / "etc/udev/rules.d/70-eport.rules"
    rules.write_text("# edited by hand\n", encoding="utf-8")
    rules.chmod(0o600)
    other = staging["root"].parent / "other-venv"
    (other / "bin").mkdir(parents=True)
    shutil.copy2(venv / "bin" / "eportd", other / "bin" / "eportd")
    (other / "bin" / "eport").symlink_to("eportd")

    staging = {**staging, "venv": other}
    result = run_install(staging)
    assert result.returncode == 0, result.stdout + result.stderr
    report = statuses(result.stdout)
    assert report[str(rules)] == "updated"
    assert rules.read_bytes() == RULES.read_bytes()
    assert stat.S_IMODE(rules.stat().st_mode) == 0o644
    assert report[str(root / "usr/local/bin/eportd")] == "updated"
    assert report[str(root / "usr/local/bin/eport")] == "installed"
    assert os.readlink(root / "usr/local/bin/eport") == str(other / "bin" / "eport")
    # A staged install never reloads, even without --no-reload, and says so.
    assert "udev and systemd were not reloaded" in result.stdout
    assert not staging["calls"].exists(), staging["calls"].read_text(encoding="utf-8")


def test_staged_group_file_gets_the_group_once(staging: dict[str, Path]) -> None:
    group = staging["root"] / "etc" / "group"
    group.write_text("root:x:0:\nsystemd-journal:x:999:\n", encoding="utf-8")

    for _ in range(2):
        result = run_install(staging, "--no-reload")
        assert result.returncode == 0, result.stdout + result.stderr
    lines = group.read_text(encoding="utf-8").splitlines()
    ours = [line for line in lines if line.startswith("eport:x:")]
    assert len(ours) == 1, lines
    gid = int(ours[0].split(":")[2])
    assert 100 <= gid < 1000 and gid != 999  # a system gid that was free
    assert statuses(result.stdout)[f"group eport ({group})"] == "unchanged"
    assert not staging["calls"].exists(), staging["calls"].read_text(encoding="utf-8")


def test_staged_root_without_group_file_skips_the_group(staging: dict[str, Path]) -> None:
    result = run_install(staging, "--no-reload")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped the group eport" in result.stdout
    assert not (staging["root"] / "etc" / "group").exists()
    assert not staging["calls"].exists(), staging["calls"].read_text(encoding="utf-8")


def test_install_refuses_without_the_venv_eportd(staging: dict[str, Path]) -> None:
    (staging["venv"] / "bin" / "eportd").unlink()
    result = run_install(staging, "--no-reload")
    assert result.returncode != 0
    assert "scripts/setup.sh" in result.stderr
    assert not any(staging["root"].rglob("*.rules")), "nothing may be installed"


def test_install_refuses_to_replace_a_file_that_is_not_a_link(staging: dict[str, Path]) -> None:
    bindir = staging["root"] / "usr/local/bin"
    bindir.mkdir(parents=True)
    (bindir / "eportd").write_text("#!/bin/sh\n", encoding="utf-8")
    result = run_install(staging, "--no-reload")
    assert result.returncode != 0
    assert "is not a symbolic link" in result.stderr
    assert (bindir / "eportd").read_text(encoding="utf-8") == "#!/bin/sh\n"
    assert not any(staging["root"].rglob("*.rules")), "nothing may be installed"


def test_install_help_and_bad_arguments() -> None:
    assert os.access(INSTALL, os.X_OK)
    helped = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert helped.returncode == 0 and "--prefix" in helped.stdout and "--no-reload" in helped.stdout
    bad = subprocess.run(["bash", str(INSTALL), "--bogus"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert bad.returncode != 0 and "unknown argument" in bad.stderr


SHELLCHECK = shutil.which("shellcheck")


def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed")
def test_shellcheck_accepts_the_install_script() -> None:
    assert SHELLCHECK is not None
    result = subprocess.run([SHELLCHECK, str(INSTALL)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
