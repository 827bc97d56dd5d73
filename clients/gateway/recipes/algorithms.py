"""The algorithm URIs of CEB message signatures: which ones the recipe writes, which ones it
reads, and what each means.

The 202205 edition of the CEB message specification (海关跨境电商统一版系统企业对接报文规范
（202205版）, §6) names, besides C14N 1.0 and the enveloped-signature transform:
- for SM2 cards, SignatureMethod `http://www.chinaport.gov.cn/2022/04/xmldsig#sm2-sm3` and
  DigestMethod `http://www.chinaport.gov.cn/2022/04/xmldsig#sm3`;
- for RSA cards, `http://www.w3.org/2000/09/xmldsig#rsa-sha1` and `...#sha1`.
Before it, some wrappers wrote `http://www.w3.org/2000/09/xmldsig#sm2-sm3` (a URI no
specification defines), usually with a SHA-1 digest. The recipe signs only in the 2022 form
and reads both, saying which it saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from eport.clients.gateway.recipes.certificates import KeyType
from eport.common import sm2

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
CHINAPORT_DSIG_NS = "http://www.chinaport.gov.cn/2022/04/xmldsig#"

C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ENVELOPED = f"{DS_NS}enveloped-signature"

RSA_SHA1 = f"{DS_NS}rsa-sha1"
SM2_SM3 = f"{CHINAPORT_DSIG_NS}sm2-sm3"
# Read, never written: what wrappers wrote before the 202205 specification.
SM2_SM3_W3_STYLE = f"{DS_NS}sm2-sm3"

SHA1 = f"{DS_NS}sha1"
SM3 = f"{CHINAPORT_DSIG_NS}sm3"

# How a message names its signature algorithm: as the 202205 specification does for SM2
# ("chinaport-2022"), with the older w3.org-style SM2 URI ("w3.org-legacy"), or the W3C's
# rsa-sha1, which the specification keeps for RSA cards ("w3.org").
MethodForm = Literal["chinaport-2022", "w3.org-legacy", "w3.org"]


@dataclass(frozen=True)
class SignatureAlgorithm:
    uri: str
    key_type: KeyType
    form: MethodForm


@dataclass(frozen=True)
class DigestAlgorithm:
    uri: str
    name: Literal["sha1", "sm3"]
    hash: Callable[[bytes], bytes]


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


SIGNATURE_ALGORITHMS: dict[str, SignatureAlgorithm] = {
    RSA_SHA1: SignatureAlgorithm(RSA_SHA1, "rsa", "w3.org"),
    SM2_SM3: SignatureAlgorithm(SM2_SM3, "sm2", "chinaport-2022"),
    SM2_SM3_W3_STYLE: SignatureAlgorithm(SM2_SM3_W3_STYLE, "sm2", "w3.org-legacy"),
}

# The DigestValue is a plain hash of the canonical document: SM3 here has no Z value (that
# belongs to the SM2 signature alone).
DIGEST_ALGORITHMS: dict[str, DigestAlgorithm] = {
    SHA1: DigestAlgorithm(SHA1, "sha1", _sha1),
    SM3: DigestAlgorithm(SM3, "sm3", sm2.sm3),
}

# What the recipe writes for each kind of card.
WRITTEN: dict[KeyType, tuple[SignatureAlgorithm, DigestAlgorithm]] = {
    "rsa": (SIGNATURE_ALGORITHMS[RSA_SHA1], DIGEST_ALGORITHMS[SHA1]),
    "sm2": (SIGNATURE_ALGORITHMS[SM2_SM3], DIGEST_ALGORITHMS[SM3]),
}
