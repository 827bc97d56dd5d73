"""Issue a simulated E-port card: generate its key, have the test CA sign its certificate,
and write the card image."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eport.common import sm2
from eport.common.failure import EportFailure
from eport.common.piv import ALGORITHM_BY_NAME, pad_pin
from eport.common.profile import (
    CREDIT_ALPHABET,
    CardForm,
    CardKind,
    EportProfile,
    ProfileError,
    credit_code_check_char,
)
from eport.firmware_sim.ca import TestCA
from eport.firmware_sim.image import CardImage, CardImageError, write_image_atomically
from eport.firmware_sim.reference_data import (
    DEFAULT_KDF_ITERATIONS,
    ReferenceData,
    is_well_formed_block,
)

# Cards of these algorithms carry an envelope key of the same algorithm and size.
ENVELOPE_ALGORITHMS = ("rsa1024", "rsa2048", "sm2")

DEFAULT_PIN = "88888888"
DEFAULT_PUK = "12345678"


class ProvisionError(EportFailure, ValueError):
    """A provisioning request that breaks a rule; the message names the field."""

    code = "PROVISION"


@dataclass(frozen=True)
class ProvisionRequest:
    kind: CardKind
    form: CardForm
    algorithm: str
    not_before: datetime
    not_after: datetime
    holder_name: str = "张三"
    enterprise_name: str = "测试进出口贸易有限公司"
    customs_code: str | None = None  # random when None
    credit_code: str | None = None  # random (with a valid check character) when None
    card_id: str | None = None  # random 16 digits when None
    pin: str = DEFAULT_PIN
    puk: str = DEFAULT_PUK
    pin_tries: int = 3
    puk_tries: int = 3
    pin_tries_left: int | None = None  # a card that already lost tries, for tests
    kdf_iterations: int = DEFAULT_KDF_ITERATIONS
    # The envelope key in slot 9D, for RSA and SM2 cards (P-256 cards never get one); False
    # makes a card like those issued before the simulator had it.
    envelope_key: bool = True
    # "real": certificates in the E-port certificate profile and no E-port data object.
    certificate_profile: str = "sim"


def random_digits(count: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(count))


def random_credit_code() -> str:
    # 9 = registered by the market regulator, 1 = enterprise, then a 6-digit region code.
    first17 = "91110000" + "".join(secrets.choice(CREDIT_ALPHABET) for _ in range(9))
    return first17 + credit_code_check_char(first17)


def _cert_number(algorithm: str) -> str:
    # Old RSA-1024 E-port cards have 8-hex-digit certificate numbers, newer ones 16.
    if algorithm == "rsa1024":
        return f"{secrets.randbelow(0xEFFFFFFF) + 0x10000000:08x}"
    return f"{secrets.randbelow(0x6FFFFFFFFFFFFFFF) + 0x1000000000000000:016x}"


def _reference(secret: str, what: str, tries: int, iterations: int) -> ReferenceData:
    try:
        block = pad_pin(secret)
    except (ValueError, UnicodeEncodeError):
        block = b""
    if not is_well_formed_block(block):
        raise ProvisionError(f"{what}: 6 to 8 digits / {what}应为6至8位数字")
    if not 1 <= tries <= 15:
        raise ProvisionError(f"{what} tries: 1 to 15 / {what}重试次数应为1至15")
    return ReferenceData.create(block, max_tries=tries, iterations=iterations)


def provision_card(ca: TestCA, request: ProvisionRequest) -> CardImage:
    if request.algorithm not in ALGORITHM_BY_NAME:
        raise ProvisionError(
            f"algorithm: one of {', '.join(ALGORITHM_BY_NAME)} / 算法应为 "
            + "、".join(ALGORITHM_BY_NAME)
        )
    profile = EportProfile(
        card_id=request.card_id or random_digits(16),
        holder_name=request.holder_name,
        enterprise_name=request.enterprise_name,
        customs_code=request.customs_code or random_digits(10),
        credit_code=request.credit_code or random_credit_code(),
        cert_number=_cert_number(request.algorithm),
        kind=request.kind,
        form=request.form,
        not_before=request.not_before,
        not_after=request.not_after,
        algorithm=request.algorithm,
    )
    try:
        profile.validate()
    except ProfileError as exc:
        raise ProvisionError(str(exc)) from None
    pin = _reference(request.pin, "PIN", request.pin_tries, request.kdf_iterations)
    puk = _reference(request.puk, "PUK", request.puk_tries, request.kdf_iterations)
    if request.pin_tries_left is not None:
        if not 0 <= request.pin_tries_left <= request.pin_tries:
            raise ProvisionError("PIN tries left: 0 to the PIN tries / PIN剩余次数超出范围")
        pin = ReferenceData(
            pin.salt, pin.digest, pin.iterations, request.pin_tries_left, pin.max_tries
        )

    if request.certificate_profile not in ("sim", "real"):
        raise ProvisionError("certificate profile: sim or real / 证书格式应为 sim 或 real")
    real = request.certificate_profile == "real"
    private_key, public_key = _generate_key(request.algorithm)
    certificate = ca.issue(profile, public_key, real_profile=real)
    envelope_key, envelope_certificate = None, None
    if request.envelope_key and request.algorithm in ENVELOPE_ALGORITHMS:
        envelope_key, envelope_public_key = _generate_key(request.algorithm)
        envelope_certificate = ca.issue(
            profile,
            envelope_public_key,
            envelope_serial=_envelope_serial(profile.cert_number),
            real_profile=real,
        )
    return CardImage(
        profile=profile,
        algorithm=ALGORITHM_BY_NAME[request.algorithm],
        private_key=private_key,
        certificate=certificate,
        ca_certificate=ca.certificate_for(request.algorithm),
        pin=pin,
        puk=puk,
        envelope_private_key=envelope_key,
        envelope_certificate=envelope_certificate,
        real_certificate_profile=real,
    )


def _envelope_serial(cert_number: str) -> int:
    """A serial of the same size as the signing certificate's and different from it (the
    CA must not issue two certificates with one serial, RFC 5280 §4.1.2.2)."""
    while True:
        serial = _cert_number("rsa1024" if len(cert_number) == 8 else "sm2")
        if serial != cert_number:
            return int(serial, 16)


def _generate_key(
    algorithm: str,
) -> tuple[bytes, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | tuple[int, int]]:
    if algorithm == "sm2":
        d = sm2.generate_private_key()
        return d.to_bytes(32, "big"), sm2.public_point(d)
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "p256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(65537, 1024 if algorithm == "rsa1024" else 2048)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der, key.public_key()


def save_new_card(image: CardImage, path: Path, *, force: bool = False) -> None:
    """Write a freshly provisioned card; never replace an existing card by accident."""
    path = Path(path)
    if path.exists() and not force:
        raise CardImageError(
            f"卡片映像已存在 / {path} already exists. Remedy: choose another file name, or pass "
            "--force to replace that card (its keys and PIN state are lost)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image_atomically(path, image)
