"""`eport sign` as a script runs it, one process per signature, against `pkcs11-tool --sign`.

    flock /tmp/eport-pcsc.lock .venv/bin/python benchmarks/eport_sign_startup.py [--runs 20]

One RSA-2048 card is provisioned by a throwaway test CA and put in vpcd slot 0 by
`eport-sim run` in a process of its own (OpenSC blocks in C holding the GIL; a card simulated
in a process that also waits on it would deadlock). pcscd is the system's (started for the run
when it is not running, root only); a real eportd serves on a socket in a temporary directory.

Timed, whole processes, interleaved (A B A B …) so that load on the machine hits both alike:

- eport, PIN each time: `eport --socket S sign FILE --pin-stdin` with the PIN on standard
  input and the base64 signature on standard output (as `sig=$(eport sign …)`).
  This is what a script that holds the PIN does, and what pkcs11-tool does (log in, sign,
  exit).
- eport, logged in: the same after one `eport pin verify` (eportd keeps the session), so no
  PIN is sent: the path of a user who logged in once.
- pkcs11-tool: `pkcs11-tool --module opensc-pkcs11.so --sign --login --pin … -m SHA256-RSA-PKCS
  --id 02 -i FILE -o SIG` (OpenSC's PIV driver on the same simulated card, through pcscd).

Every signature is checked with the card's certificate (cryptography). Also printed: the
import time (`python -X importtime`) of what `eport sign` imports, against the eager set the
`eport` command imported before its subcommands were loaded lazily (main plus every command
module), and what grpcio would add (the kit's unary calls do without it).

Bytecode: the package's modules are compiled first (compileall), as `pip install` does. In a
source checkout run with PYTHONDONTWRITEBYTECODE=1 (some CI images set it), every `eport`
process would otherwise compile its ~30 modules again, about 25 ms that no installed copy pays.

Exit status: 0 when every run signed and verified and eport (PIN each time) is within
TARGET_RATIO of pkcs11-tool's median, 1 otherwise, 2 when the stack cannot be had.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from daemon_benchmark import percentile, start_pcscd_if_needed, stop_pcscd

from eport.clients.cli.main import COMMANDS
from eport.firmware_sim.ca import init_ca
from eport.firmware_sim.image import CardImage
from tests.support.cards import provision_test_card, write_card
from tests.support.daemon_stack import Daemon, start_daemon, wait_for_card
from tests.support.pcsc_stack import (
    OPENSC_MODULE,
    reader_for_slot,
    start_sim_process,
    wait_for_presence,
)

PIN = "88888888"  # the PIN of the card this script provisions (and of no other card)
PIV_SIGNING_KEY_ID = "02"  # OpenSC's id of the PIV key in slot 9C ("digital signature")
TARGET_RATIO = 2.5
EPORT = str(Path(sys.executable).with_name("eport"))
RUN_TIMEOUT_S = 60


@dataclass
class Series:
    name: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000 if self.seconds else float("nan")

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 0.99) * 1000 if self.seconds else float("nan")


def timed(command: list[str], stdin: str | None, env: dict[str, str],
          stdout_to: Path | None = None) -> tuple[float, str]:
    """Seconds from spawn to exit; "" or what went wrong (never the command line: the
    pkcs11-tool one holds the PIN). `stdout_to`: where the command's output is kept."""
    started = time.perf_counter()
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env,
                            timeout=RUN_TIMEOUT_S,
                            stdin=None if stdin is not None else subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if stdout_to is not None:
        stdout_to.write_text(result.stdout)
    if result.returncode != 0:
        shown = (result.stdout + result.stderr).replace(PIN, "********").strip()
        return seconds, f"exit {result.returncode}: {shown[-300:]}"
    return seconds, ""


def verifies(certificate_der: bytes, data: bytes, signature: bytes) -> bool:
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        return False
    return True


def import_time_ms(statement: str) -> float:
    """Total import time of `statement` by `python -X importtime` (top-level modules'
    cumulative microseconds), in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True)
    total = 0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.split("|")
        if not name.startswith("  "):  # "| name": one space, a top-level import
            total += int(cumulative)
    return total / 1000


def compile_bytecode() -> None:
    """The package's .pyc files, as an installed copy has them. compileall skips symlinked
    directories, and a source checkout's package links its parts, so each is named."""
    package = Path(sys.modules["eport"].__file__ or "").parent
    parts = [str(child) for child in sorted(package.iterdir()) if child.is_dir()]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *parts],
                   check=True, stdout=subprocess.DEVNULL)


def import_figures() -> dict[str, float]:
    sign_module = COMMANDS["sign"].target.partition(":")[0]
    every_module = sorted({entry.target.partition(":")[0] for entry in COMMANDS.values()})
    return {
        "eager (main + every command module, as before)": import_time_ms(
            "import eport.clients.cli.main; " + "; ".join(f"import {m}" for m in every_module)),
        "eport sign (main + its module)": import_time_ms(
            f"import eport.clients.cli.main; import {sign_module}"),
        "grpcio and grpc_status (not loaded by eport sign)": import_time_ms(
            "import grpc; from grpc_status import rpc_status"),
    }


def process_figures(runs: int, workdir: Path, daemon: Daemon, image: CardImage
                    ) -> list[Series]:
    data = workdir / "message.xml"
    data.write_bytes(b"<CEBMessage>" + b"x" * 2000 + b"</CEBMessage>")
    signature = workdir / "signature.bin"
    env = {**os.environ, "LANG": "C.UTF-8"}
    env.pop("EPORTD_SOCKET", None)
    # As `sig=$(eport sign FILE)` in a script: the base64 signature on standard output.
    eport_sign = [EPORT, "--socket", str(daemon.socket), "sign", str(data)]
    eport_output = workdir / "signature.b64"
    pkcs11_tool = ["pkcs11-tool", "--module", OPENSC_MODULE, "--sign", "--login",
                   "--pin", PIN, "-m", "SHA256-RSA-PKCS", "--id", PIV_SIGNING_KEY_ID,
                   "-i", str(data), "-o", str(signature)]
    eport_logged_in = [EPORT, "--socket", str(daemon.socket), "pin", "verify", "--pin-stdin"]
    eport_logout = [EPORT, "--socket", str(daemon.socket), "pin", "logout"]

    def with_pin() -> tuple[float, str]:
        # No session left from the logged-in series: this one must send the PIN.
        _, problem = timed(eport_logout, None, env)
        return timed([*eport_sign, "--pin-stdin"], PIN + "\n", env, eport_output
                     ) if not problem else (0.0, problem)

    def logged_in() -> tuple[float, str]:
        _, problem = timed(eport_logged_in, PIN + "\n", env)
        return timed(eport_sign, None, env, eport_output) if not problem else (0.0, problem)

    plan: list[tuple[Series, Callable[[], tuple[float, str]]]] = [
        (Series("eport sign --pin-stdin"), with_pin),
        (Series("eport sign (logged in)"), logged_in),
        (Series("pkcs11-tool --sign --login"), lambda: timed(pkcs11_tool, None, env)),
    ]
    for _warm_up in range(2):  # page cache, pcscd's and OpenSC's first-use costs
        for _series, run in plan:
            run()
    for _ in range(runs):
        for series, run in plan:
            signature.unlink(missing_ok=True)
            eport_output.unlink(missing_ok=True)
            seconds, problem = run()
            made = (base64.b64decode(eport_output.read_text()) if eport_output.exists()
                    else signature.read_bytes() if signature.exists() else b"")
            if not problem and not verifies(image.certificate, data.read_bytes(), made):
                problem = "the signature does not verify with the card's certificate"
            if problem:
                series.failures.append(problem)
            else:
                series.seconds.append(seconds)
    return [series for series, _ in plan]


def main() -> int:
    parser = argparse.ArgumentParser(description="`eport sign` per process vs pkcs11-tool")
    parser.add_argument("--runs", type=int, default=20,
                        help="timed runs of each command, interleaved (default: %(default)s)")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs must be at least 10")
    if not Path(OPENSC_MODULE).exists():
        print(f"OpenSC's PKCS#11 module {OPENSC_MODULE} is missing (apt-get install opensc)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    compile_bytecode()
    reader = reader_for_slot(0)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="eport-sign-bench-") as temp, \
            contextlib.ExitStack() as cleanup:
        workdir = Path(temp)
        try:
            cleanup.callback(stop_pcscd, start_pcscd_if_needed(reader))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
        ca = init_ca(workdir / "ca")
        image = provision_test_card(ca, "rsa2048")
        card = start_sim_process(write_card(image, workdir, "card.json"), 0, workdir / "control")

        def remove_card() -> None:
            card.kill()
            card.wait(timeout=10)
            with contextlib.suppress(Exception):
                wait_for_presence(reader, False, timeout=5)

        cleanup.callback(remove_card)
        daemon = start_daemon(workdir / "run", "--trust-anchor", str(ca.trust_bundle))
        cleanup.callback(daemon.stop)
        wait_for_card(daemon.stub(), reader)
        print(f"{args.runs} runs each, interleaved; {os.cpu_count()} CPUs; load average "
              f"{load_before[0]:.2f}", flush=True)
        series = process_figures(args.runs, workdir, daemon, image)
    imports = import_figures()
    load_after = os.getloadavg()

    print(f"\nWhole processes, spawn to exit ({args.runs} runs each):")
    print(f"  {'command':30} {'median ms':>10} {'p99 ms':>8} {'failures':>8}")
    for entry in series:
        print(f"  {entry.name:30} {entry.median_ms:10.1f} {entry.p99_ms:8.1f} "
              f"{len(entry.failures):8d}")
        for problem in entry.failures[:3]:
            print(f"    {problem}")
    with_pin, logged_in, opensc = series
    ratio = with_pin.median_ms / opensc.median_ms
    print(f"\n  ratio eport (PIN each time) / pkcs11-tool, medians: {ratio:.2f} "
          f"(target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    print(f"  ratio eport (logged in) / pkcs11-tool, medians: "
          f"{logged_in.median_ms / opensc.median_ms:.2f}")
    print("\nImport time (python -X importtime, top-level cumulative):")
    for name, milliseconds in imports.items():
        print(f"  {name:50} {milliseconds:7.1f} ms")
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          "(other programs skew the figures)")
    failed = any(entry.failures for entry in series) or ratio > TARGET_RATIO
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
