"""Benchmark of the simulated card through the real pcscd (vpcd driver).

    .venv/bin/python benchmarks/sim_benchmark.py [--rounds 2000] [--signatures 200]

Prints, through pcscd: the median and p99 round trip of a trivial APDU (VERIFY status query:
no crypto, no disk write), with our socket tuning and, as a peer in the same run, without it
(TCP_NODELAY/TCP_QUICKACK off); the same APDU in-process (the card's own share); and
GENERAL AUTHENTICATE times for RSA-2048, P-256 and SM2 through pcscd and in-process.
Target: median APDU round trip through pcscd under 0.3 ms.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eport.cardlib.key_kind import KeyKind
from eport.cardlib.pcsc.piv_session import PivSession
from eport.cardlib.pcsc.transport import PcscContext
from eport.cardlib.signing_algorithms import default_algorithm, message_digest, spec
from eport.common.piv import Algorithm
from eport.common.profile import CardForm, CardKind
from eport.firmware_sim.ca import init_ca
from eport.firmware_sim.card_os import CardOS, load_card
from eport.firmware_sim.demo import ensure_pcscd, vpcd_reader_name
from eport.firmware_sim.image import read_image, write_image_atomically
from eport.firmware_sim.inprocess import InProcessConnection
from eport.firmware_sim.provision import ProvisionRequest, provision_card
from eport.firmware_sim.runner import SimulatorRunner
from eport.firmware_sim.vpcd import LatencyTuning

STATUS_QUERY = bytes.fromhex("00200080")
SELECT = bytes.fromhex("00A4040005A000000308")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(action: Callable[[], object], rounds: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        action()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(label: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    print(f"  {label:44} median {median:8.3f} ms   p99 {percentile(samples, 0.99):8.3f} ms"
          f"   n={len(samples)}")
    return median


def challenge_for(key: KeyKind, certificate: bytes, message: bytes) -> bytes:
    """What GENERAL AUTHENTICATE is given: the digest of the key's own algorithm (SM2: Z from
    the certificate), in the PKCS#1 v1.5 block for RSA."""
    signed_with = spec(default_algorithm(key))
    digest = message_digest(signed_with.algorithm, message, certificate)
    if not signed_with.is_rsa:
        return digest
    t = signed_with.digest_info + digest
    return b"\x00\x01" + b"\xff" * (256 - len(t) - 3) + b"\x00" + t


def through_pcscd(card_path: Path, slot: int, measure: Callable[[PivSession, object], None]
                  ) -> None:
    runner = SimulatorRunner(load_card)
    runner.add_slot(slot, card_path)
    runner.start()
    reader = vpcd_reader_name(slot)
    try:
        with PcscContext() as context:
            context.wait_for_presence(reader, True, timeout=5)
            connection = context.connect(reader)
            try:
                piv = PivSession(connection)
                piv.select()
                measure(piv, connection)
            finally:
                connection.close()
            runner.stop()
            context.wait_for_presence(reader, False, timeout=5)
    finally:
        runner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated card benchmark through pcscd")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--signatures", type=int, default=200)
    parser.add_argument("--slot", type=int, default=0)
    args = parser.parse_args()
    ensure_pcscd(vpcd_reader_name(args.slot))

    workdir = Path(tempfile.mkdtemp(prefix="eport-bench-"))
    test_ca = init_ca(workdir / "ca")
    now = datetime.now(UTC)
    cards: dict[str, Path] = {}
    for name in ("rsa2048", "p256", "sm2"):
        image = provision_card(test_ca, ProvisionRequest(
            kind=CardKind.OPERATOR, form=CardForm.IC, algorithm=name,
            not_before=now - timedelta(days=1), not_after=now + timedelta(days=365)))
        cards[name] = workdir / f"{name}.json"
        write_image_atomically(cards[name], image)

    print(f"APDU round trip ({args.rounds} rounds, VERIFY status query 00 20 00 80):")
    results: dict[str, float] = {}

    def apdu_round_trip(label: str, rounds: int) -> Callable[[PivSession, object], None]:
        def measure(_piv: PivSession, connection: object) -> None:
            send = connection.send_and_receive  # type: ignore[attr-defined]
            results[label] = report(label, timed(lambda: send(STATUS_QUERY), rounds))
        return measure

    through_pcscd(cards["p256"], args.slot,
                  apdu_round_trip("through pcscd, tuned socket", args.rounds))
    LatencyTuning.enabled = False
    try:
        through_pcscd(cards["p256"], args.slot,
                      # ~45 ms a round: fewer rounds keep the peer under a minute
                      apdu_round_trip("through pcscd, default socket (peer)",
                                      min(args.rounds, 200)))
    finally:
        LatencyTuning.enabled = True
    in_process = InProcessConnection(CardOS(read_image(cards["p256"])))
    results["in-process"] = report("in-process transport (the card's share)",
                                   timed(lambda: in_process.send_and_receive(STATUS_QUERY),
                                         args.rounds))
    tuned, untuned = results["through pcscd, tuned socket"], results[
        "through pcscd, default socket (peer)"]
    print(f"  tuned vs default socket: {untuned / tuned:.0f}x faster; target median < 0.3 ms: "
          f"{'met' if tuned < 0.3 else 'NOT met'}")

    print(f"\nGENERAL AUTHENTICATE ({args.signatures} signatures each, PIN verified once):")
    algorithms = {"rsa2048": Algorithm.RSA_2048, "p256": Algorithm.ECC_P256,
                  "sm2": Algorithm.SM2_SM3}
    for name, algorithm in algorithms.items():
        message = f"declaration for {name}".encode()

        def measure(piv: PivSession, _connection: object, algorithm: Algorithm = algorithm,
                    message: bytes = message, name: str = name) -> None:
            challenge = challenge_for(KeyKind(name), piv.read_certificate(), message)
            piv.verify_pin(b"88888888")
            report(f"{name} through pcscd",
                   timed(lambda: piv.sign(algorithm, challenge), args.signatures, warmup=5))

        through_pcscd(cards[name], args.slot, measure)
        card = CardOS(read_image(cards[name]))
        local = PivSession(InProcessConnection(card))
        local.select()
        challenge = challenge_for(KeyKind(name), local.read_certificate(), message)
        local.verify_pin(b"88888888")
        sign_locally = functools.partial(local.sign, algorithm, challenge)
        report(f"{name} in-process (peer)", timed(sign_locally, args.signatures, warmup=5))


if __name__ == "__main__":
    main()
