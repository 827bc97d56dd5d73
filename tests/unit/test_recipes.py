"""The gateway recipes without a card or a gateway: CEB XML signing and verification, the
announcement-179 signing string, GatewaySigner against a small protocol stand-in, and the CLI.

Signatures are made with software keys (an RSA-2048 key with a self-signed certificate from
`cryptography`, an SM2 key with a certificate from the project's SM2 X.509 builder) and checked
by independent implementations: signxml for the RSA XML-DSig, OpenSSL for SM2 and for the raw
signatures, besides our own verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import click
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidSignature
from signxml.verifier import SignatureConfiguration, XMLVerifier
from websockets.sync.server import Server, ServerConnection, serve
from websockets.typing import Origin

from eport.clients.gateway.command import main as gateway_main
from eport.clients.gateway.recipes.ceb_xml import (
    DS_NS,
    VerificationResult,
    sign_ceb_xml,
    verify_ceb_xml,
)
from eport.clients.gateway.recipes.certificates import key_type_of_certificate
from eport.clients.gateway.recipes.commands import (
    RECIPE_COMMANDS,
    ceb_sign_command,
    ceb_verify_command,
    pay179_sign_command,
)
from eport.clients.gateway.recipes.errors import CardProblem, GatewayReplyError, RecipeError
from eport.clients.gateway.recipes.payment179 import (
    parse_request,
    sign_payment179,
    signing_string,
)
from eport.clients.gateway.recipes.signer import CardSigner, GatewaySigner
from eport.common import sm2
from eport.firmware_sim import sm2_x509

DISTID = "distid:1234567812345678"
PIN = "88888888"
DS = {"ds": DS_NS}
# The algorithm URIs of §6 of the CEB message specification (202205 edition), written out here
# rather than taken from the code under test.
W3 = "http://www.w3.org/2000/09/xmldsig#"
CHINAPORT = "http://www.chinaport.gov.cn/2022/04/xmldsig#"
RSA_URIS = (f"{W3}rsa-sha1", f"{W3}sha1")
SM2_URIS = (f"{CHINAPORT}sm2-sm3", f"{CHINAPORT}sm3")
OLD_SM2 = f"{W3}sm2-sm3"  # what some wrappers wrote before the 202205 edition

CEB311 = """<?xml version="1.0" encoding="UTF-8"?>
<ceb:CEB311Message guid="4CDE1CFD-EDED-46B1-946C-B8022E42FC94" version="1.0" \
xmlns:ceb="http://www.chinaport.gov.cn/ceb" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ceb:Order>
    <ceb:OrderHead>
      <ceb:guid>4CDE1CFD-EDED-46B1-946C-B8022E42FC94</ceb:guid>
      <ceb:appType>1</ceb:appType>
      <ceb:appTime>20240115103000</ceb:appTime>
      <ceb:appStatus>2</ceb:appStatus>
      <ceb:orderType>I</ceb:orderType>
      <ceb:orderNo>ORDER-TEST-20240115-0001</ceb:orderNo>
      <ceb:ebpCode>11059TEST1</ceb:ebpCode>
      <ceb:ebpName>测试电商平台有限公司</ceb:ebpName>
      <ceb:ebcCode>11059TEST2</ceb:ebcCode>
      <ceb:ebcName>测试跨境电商企业有限公司</ceb:ebcName>
      <ceb:goodsValue>199.00</ceb:goodsValue>
      <ceb:freight>0</ceb:freight>
      <ceb:discount>0</ceb:discount>
      <ceb:taxTotal>18.11</ceb:taxTotal>
      <ceb:acturalPaid>217.11</ceb:acturalPaid>
      <ceb:currency>142</ceb:currency>
      <ceb:buyerRegNo>buyer0001</ceb:buyerRegNo>
      <ceb:buyerName>张三</ceb:buyerName>
      <ceb:buyerTelephone>13800000000</ceb:buyerTelephone>
      <ceb:buyerIdType>1</ceb:buyerIdType>
      <ceb:buyerIdNumber>110101199001011234</ceb:buyerIdNumber>
      <ceb:consignee>张三</ceb:consignee>
      <ceb:consigneeTelephone>13800000000</ceb:consigneeTelephone>
      <ceb:consigneeAddress>北京市东城区测试路1号 &amp; 2号楼 &lt;东门&gt;</ceb:consigneeAddress>
      <ceb:note>测试订单，请勿发货</ceb:note>
    </ceb:OrderHead>
    <ceb:OrderList>
      <ceb:gnum>1</ceb:gnum>
      <ceb:itemNo>SKU-0001</ceb:itemNo>
      <ceb:itemName>婴儿配方奶粉（1段）900克</ceb:itemName>
      <ceb:gmodel>900g/罐</ceb:gmodel>
      <ceb:unit>122</ceb:unit>
      <ceb:qty>1</ceb:qty>
      <ceb:price>199.00</ceb:price>
      <ceb:totalPrice>199.00</ceb:totalPrice>
      <ceb:currency>142</ceb:currency>
      <ceb:country>601</ceb:country>
      <ceb:note/>
    </ceb:OrderList>
  </ceb:Order>
  <ceb:BaseTransfer>
    <ceb:copCode>11059TEST2</ceb:copCode>
    <ceb:copName>测试跨境电商企业有限公司</ceb:copName>
    <ceb:dxpMode>DXP</ceb:dxpMode>
    <ceb:dxpId>DXPENTTEST000001</ceb:dxpId>
    <ceb:note>测试</ceb:note>
  </ceb:BaseTransfer>
</ceb:CEB311Message>
"""

PAY179 = {
    "sessionID": "ad2254-8hewyf32-55616216",
    "payExchangeInfoHead": {
        "guid": "9D55BA71-55DE-41F4-8B50-C36C83B3B419",
        "initalRequest": "https://pay.example.cn/gateway.do?timestamp=2024-01-15 10:30:00"
                         "&method=trade.pay&app_id=13580&charset=UTF-8",
        "initalResponse": "ok",
        "ebpCode": "11059TEST1",
        "payCode": "312226T001",
        "payTransactionId": "2024011522001354081010726129",
        "totalAmount": 100,
        "currency": "142",
        "verDept": "3",
        "payType": "1",
        "tradingTime": "20240115103000",
        "note": "批量订单，测试 \"引号\" 与 \\ 反斜杠",
    },
    "payExchangeInfoLists": [
        {
            "orderNo": "SO1710301150602574003",
            "goodsInfo": [
                {"gname": "婴儿奶粉", "itemLink": "https://shop.example.cn/item?id=999761&s=453"},
                {"gname": "纸尿裤 L码", "itemLink": "https://shop.example.cn/item?id=999760"},
            ],
            "recpAccount": "OSA571908863132601",
            "recpCode": "",
            "recpName": "测试收款企业",
        }
    ],
    "serviceTime": "1705285800000",
}

PAY179_STRING = (
    '"sessionID":"ad2254-8hewyf32-55616216"||'
    '"payExchangeInfoHead":"{"guid":"9D55BA71-55DE-41F4-8B50-C36C83B3B419",'
    '"initalRequest":"https://pay.example.cn/gateway.do?timestamp=2024-01-15 10:30:00'
    '&method=trade.pay&app_id=13580&charset=UTF-8","initalResponse":"ok",'
    '"ebpCode":"11059TEST1","payCode":"312226T001",'
    '"payTransactionId":"2024011522001354081010726129","totalAmount":100,"currency":"142",'
    '"verDept":"3","payType":"1","tradingTime":"20240115103000",'
    '"note":"批量订单，测试 \\"引号\\" 与 \\\\ 反斜杠"}"||'
    '"payExchangeInfoLists":"[{"orderNo":"SO1710301150602574003","goodsInfo":['
    '{"gname":"婴儿奶粉","itemLink":"https://shop.example.cn/item?id=999761&s=453"},'
    '{"gname":"纸尿裤 L码","itemLink":"https://shop.example.cn/item?id=999760"}],'
    '"recpAccount":"OSA571908863132601","recpCode":"","recpName":"测试收款企业"}]"||'
    '"serviceTime":"1705285800000"'
)


# ---- software signers ----

@dataclass
class KeySigner:
    """A CardSigner on a software key: what the E-port client returns, without the card."""

    certificate: bytes
    number: str
    rsa_key: rsa.RSAPrivateKey | None = None
    sm2_key: int | None = None
    signed: list[bytes] = field(default_factory=list)

    def certificate_der(self) -> bytes:
        return self.certificate

    def certificate_number(self) -> str:
        return self.number

    def key_type(self) -> Literal["rsa", "sm2"]:
        return "rsa" if self.rsa_key is not None else "sm2"

    def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        if self.rsa_key is not None:
            return self.rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA1())
        assert self.sm2_key is not None
        return sm2.encode_raw_signature(*sm2.sign_message(self.sm2_key, data))

    def public_pem(self) -> bytes:
        if self.rsa_key is not None:
            return self.rsa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert self.sm2_key is not None
        return sm2.public_key_pem(sm2.public_point(self.sm2_key))

    def certificate_pem(self) -> str:
        return x509.load_der_x509_certificate(self.certificate).public_bytes(
            serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "测试企业 TEST"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[datetime, datetime]:
    now = datetime.now(UTC).replace(microsecond=0)
    return now - timedelta(days=1), now + timedelta(days=365)


def make_rsa_signer(number: str = "0a1b2c3d") -> KeySigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    not_before, not_after = _validity()
    name = _name("张三 RSA TEST")
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(int(number, 16))
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .sign(key, hashes.SHA256()))
    return KeySigner(certificate.public_bytes(serialization.Encoding.DER), number, rsa_key=key)


def make_sm2_signer(number: str = "01691fe9") -> KeySigner:
    key = sm2.generate_private_key()
    point = sm2.public_point(key)
    not_before, not_after = _validity()
    name = _name("李四 SM2 TEST")
    certificate = sm2_x509.build_certificate(
        subject=name, issuer=name, subject_public_point=point, issuer_private_key=key,
        issuer_public_point=point, serial_number=int(number, 16), not_before=not_before,
        not_after=not_after, is_ca=False)
    return KeySigner(certificate, number, sm2_key=key)


@pytest.fixture(scope="module")
def rsa_signer() -> KeySigner:
    return make_rsa_signer()


@pytest.fixture(scope="module")
def sm2_signer() -> KeySigner:
    return make_sm2_signer()


@pytest.fixture(params=["rsa", "sm2"])
def signer(request: pytest.FixtureRequest, rsa_signer: KeySigner, sm2_signer: KeySigner
           ) -> KeySigner:
    return rsa_signer if request.param == "rsa" else sm2_signer


# ---- independent checks ----

def signxml_verify(document: bytes, certificate_pem: str) -> Any:
    """signxml with the legacy SHA-1 algorithms allowed (it refuses them by default)."""
    config = SignatureConfiguration(
        signature_methods=frozenset({SignatureMethod.RSA_SHA1}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA1}))
    return XMLVerifier().verify(document, x509_cert=certificate_pem, expect_config=config)


def openssl_verify(tmp_path: Path, key_type: str, public_pem: bytes, data: bytes,
                   signature: bytes) -> bool:
    """`openssl dgst` on the raw signature: SHA1withRSA, or SM2-with-SM3 with the default ID
    (the r || s converted to DER, which is what OpenSSL reads)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "pub.pem").write_bytes(public_pem)
    (tmp_path / "data.bin").write_bytes(data)
    if key_type == "sm2":
        signature = sm2.encode_der_signature(*sm2.decode_raw_signature(signature))
        options = ["-sm3", "-sigopt", DISTID]
    else:
        options = ["-sha1"]
    (tmp_path / "sig.der").write_bytes(signature)
    result = subprocess.run(
        [openssl, "dgst", *options, "-verify", str(tmp_path / "pub.pem"), "-signature",
         str(tmp_path / "sig.der"), str(tmp_path / "data.bin")],
        capture_output=True, text=True, check=False)
    assert ("Verified OK" in result.stdout) == (result.returncode == 0), result
    return result.returncode == 0


def signature_element(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    found = root.findall("ds:Signature", DS)
    assert len(found) == 1
    return found[0]


def signed_info_c14n(document: bytes) -> bytes:
    """Computed here with lxml directly (the samples have no inherited xml:* attributes)."""
    signed_info = signature_element(document).find("ds:SignedInfo", DS)
    assert signed_info is not None
    result: bytes = etree.tostring(signed_info, method="c14n", exclusive=False,
                                   with_comments=False)
    return result


def signature_value(document: bytes) -> bytes:
    text = signature_element(document).findtext("ds:SignatureValue", namespaces=DS)
    assert text
    return base64.b64decode(text)


def tamper(document: bytes, old: str, new: str) -> bytes:
    text = document.decode("utf-8")
    assert text.count(old) >= 1
    return text.replace(old, new, 1).encode("utf-8")


# ---- CEB XML: the signed form ----

def test_rsa_signature_verifies_with_signxml_and_ours(rsa_signer: KeySigner) -> None:
    signed = sign_ceb_xml(CEB311.encode(), rsa_signer)
    verified = signxml_verify(signed, rsa_signer.certificate_pem())
    assert "测试订单，请勿发货" in etree.tostring(verified.signed_xml, encoding="unicode")
    result = verify_ceb_xml(signed)
    assert result.valid and result.digest_ok and result.signature_ok, result
    assert result.certificate_number == "0a1b2c3d"
    assert result.key_type == "rsa"
    assert (result.signature_method, result.digest_method) == RSA_URIS
    assert result.signature_method_form == "w3.org"
    assert result.signature_encoding == "pkcs1"
    assert result.certificate_source == "document"


def test_sm2_signature_verifies_with_ours_and_openssl(sm2_signer: KeySigner,
                                                      tmp_path: Path) -> None:
    signed = sign_ceb_xml(CEB311.encode(), sm2_signer)
    result = verify_ceb_xml(signed)
    assert result.valid, result
    assert (result.key_type, result.certificate_number) == ("sm2", "01691fe9")
    assert (result.signature_method, result.digest_method) == SM2_URIS
    assert result.signature_method_form == "chinaport-2022"
    assert result.signature_encoding == "r||s"
    value = signature_value(signed)
    assert len(value) == 64  # r || s, as the E-port client returns it
    assert openssl_verify(tmp_path, "sm2", sm2_signer.public_pem(), signed_info_c14n(signed),
                          value)


def test_signed_form(signer: KeySigner) -> None:
    signer.signed.clear()
    signed = sign_ceb_xml(CEB311.encode(), signer)
    assert signed.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ceb:CEB311Message')
    root = etree.fromstring(signed)
    signature = root[-1]
    assert signature.tag == f"{{{DS_NS}}}Signature"
    assert signature.tail is None
    method, digest_method = RSA_URIS if signer.key_type() == "rsa" else SM2_URIS
    algorithms = [(etree.QName(e).localname, e.get("Algorithm"))
                  for e in signature.iter() if e.get("Algorithm")]
    assert algorithms == [
        ("CanonicalizationMethod", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"),
        ("SignatureMethod", method),
        ("Transform", "http://www.w3.org/2000/09/xmldsig#enveloped-signature"),
        ("DigestMethod", digest_method),
    ]
    assert [etree.QName(e).localname for e in signature] == [
        "SignedInfo", "SignatureValue", "KeyInfo"]
    assert signature.find("ds:SignedInfo/ds:Reference", DS).get("URI") == ""  # type: ignore[union-attr]
    assert signature.findtext("ds:KeyInfo/ds:KeyName", namespaces=DS) == signer.number
    embedded = signature.findtext("ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=DS)
    assert embedded and base64.b64decode(embedded) == signer.certificate
    # DigestValue: SHA-1 (RSA) or plain SM3 (SM2) of the C14N of the unsigned document,
    # computed independently (hashlib's SM3 is OpenSSL's).
    unsigned = etree.fromstring(CEB311.encode()).getroottree()
    expected = base64.b64encode(hashlib.new(
        "sha1" if signer.key_type() == "rsa" else "sm3",
        etree.tostring(unsigned, method="c14n", exclusive=False, with_comments=False)).digest())
    assert signature.findtext("ds:SignedInfo/ds:Reference/ds:DigestValue",
                              namespaces=DS) == expected.decode()
    # The card was given exactly the SignedInfo canonicalised in context: it carries the
    # namespace declarations in scope there.
    assert signer.signed == [signed_info_c14n(signed)]
    assert signer.signed[0].startswith(
        b'<ds:SignedInfo xmlns:ceb="http://www.chinaport.gov.cn/ceb" '
        b'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">')
    # Without the signature the document is the input (lxml writes namespace declarations
    # before attributes, so the comparison is of canonical forms).
    root.remove(signature)
    assert etree.tostring(root, method="c14n") == etree.tostring(
        etree.fromstring(CEB311.encode()), method="c14n")


def test_without_declaration_no_declaration(rsa_signer: KeySigner) -> None:
    bare = CEB311.split("\n", 1)[1].encode()
    signed = sign_ceb_xml(bare, rsa_signer)
    assert signed.startswith(b"<ceb:CEB311Message")
    assert verify_ceb_xml(signed).valid


def test_gbk_input_comes_out_utf8(rsa_signer: KeySigner) -> None:
    gbk = CEB311.replace('encoding="UTF-8"', 'encoding="GBK"').encode("gbk")
    signed = sign_ceb_xml(gbk, rsa_signer)
    assert signed.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert "婴儿配方奶粉（1段）900克".encode() in signed
    assert verify_ceb_xml(signed).valid
    signxml_verify(signed, rsa_signer.certificate_pem())


def test_inherited_xml_lang_is_part_of_signed_info(sm2_signer: KeySigner) -> None:
    """C14N 1.0 puts the xml:* attributes SignedInfo inherits on its top element."""
    sm2_signer.signed.clear()
    with_lang = CEB311.replace('version="1.0" xmlns', 'version="1.0" xml:lang="zh-CN" xmlns')
    signed = sign_ceb_xml(with_lang.encode(), sm2_signer)
    assert b'xml:lang="zh-CN"' in sm2_signer.signed[0].split(b">", 1)[0]
    assert verify_ceb_xml(signed).valid


def test_comments_and_cdata_are_kept(rsa_signer: KeySigner) -> None:
    with_comment = CEB311.replace("<ceb:Order>", "<!-- 注释 --><ceb:Order>").replace(
        "<ceb:note>测试</ceb:note>", "<ceb:note><![CDATA[测试 <a&b>]]></ceb:note>")
    signed = sign_ceb_xml(with_comment.encode(), rsa_signer)
    assert "<!-- 注释 -->".encode() in signed
    assert "<![CDATA[测试 <a&b>]]>".encode() in signed
    assert verify_ceb_xml(signed).valid
    signxml_verify(signed, rsa_signer.certificate_pem())


# ---- CEB XML: tampering ----

@pytest.mark.parametrize("old,new", [("张三", "张四"), ("199.00", "199.01"),
                                     ('appStatus>2<', 'appStatus>3<')])
def test_tampered_content_fails_both_verifiers(rsa_signer: KeySigner, old: str,
                                               new: str) -> None:
    tampered = tamper(sign_ceb_xml(CEB311.encode(), rsa_signer), old, new)
    with pytest.raises(InvalidSignature):
        signxml_verify(tampered, rsa_signer.certificate_pem())
    result = verify_ceb_xml(tampered)
    assert not result.valid and not result.digest_ok and result.signature_ok
    assert "digest" in result.reason.en and "摘要" in result.reason.zh


def test_tampered_sm2_content_fails(sm2_signer: KeySigner) -> None:
    tampered = tamper(sign_ceb_xml(CEB311.encode(), sm2_signer), "测试订单", "测试定单")
    result = verify_ceb_xml(tampered)
    assert not result.valid and not result.digest_ok


def test_tampered_signed_info_fails(signer: KeySigner, tmp_path: Path) -> None:
    signed = sign_ceb_xml(CEB311.encode(), signer)
    digest = signature_element(signed).findtext(".//ds:DigestValue", namespaces=DS)
    assert digest
    # Another digest in SignedInfo: the digest check fails and so does the signature value.
    changed = tamper(signed, digest, base64.b64encode(b"\x00" * 20).decode())
    result = verify_ceb_xml(changed)
    assert not result.valid and not result.signature_ok
    assert not openssl_verify(tmp_path, signer.key_type(), signer.public_pem(),
                              signed_info_c14n(changed), signature_value(changed))
    if signer.key_type() == "rsa":
        with pytest.raises(InvalidSignature):
            signxml_verify(changed, signer.certificate_pem())


def test_tampered_signature_value_fails(signer: KeySigner) -> None:
    signed = sign_ceb_xml(CEB311.encode(), signer)
    value = bytearray(signature_value(signed))
    value[10] ^= 1
    text = signature_element(signed).findtext("ds:SignatureValue", namespaces=DS)
    assert text
    changed = tamper(signed, text, base64.b64encode(bytes(value)).decode())
    result = verify_ceb_xml(changed)
    assert not result.valid and result.digest_ok and not result.signature_ok
    assert "SignatureValue" in result.reason.en


def test_wrong_or_given_certificate(rsa_signer: KeySigner, sm2_signer: KeySigner) -> None:
    signed = sign_ceb_xml(CEB311.encode(), rsa_signer)
    other = make_rsa_signer("0badcafe")
    result = verify_ceb_xml(signed, other.certificate)
    assert not result.valid and result.document_certificate_matches is False
    assert result.certificate_source == "given"
    assert verify_ceb_xml(signed, rsa_signer.certificate).document_certificate_matches is True
    mismatch = verify_ceb_xml(signed, sm2_signer.certificate)
    assert not mismatch.valid and "does not fit" in mismatch.reason.en


# ---- CEB XML: refusals ----

@pytest.mark.parametrize("data,words", [
    (b"", "empty"),
    (b"  \n\t", "empty"),
    (b"not xml at all", "well-formed"),
    (b"<ceb:CEB311Message xmlns:ceb='http://www.chinaport.gov.cn/ceb'>", "well-formed"),
    (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY big "boom">]>\n'
     b'<ceb:CEB311Message xmlns:ceb="http://www.chinaport.gov.cn/ceb">&big;</ceb:CEB311Message>',
     "DOCTYPE"),
    (b'<!DOCTYPE ceb:CEB311Message SYSTEM "http://example.invalid/x.dtd">'
     b'<ceb:CEB311Message xmlns:ceb="http://www.chinaport.gov.cn/ceb"/>', "DOCTYPE"),
    (b"<Order><a>1</a></Order>", "CEB namespace"),
])
def test_bad_input_refused(rsa_signer: KeySigner, data: bytes, words: str) -> None:
    rsa_signer.signed.clear()
    for action in (lambda: sign_ceb_xml(data, rsa_signer), lambda: verify_ceb_xml(data)):
        with pytest.raises(RecipeError) as caught:
            action()
        error = caught.value
        assert words in error.message.en
        assert error.message.zh and error.remedy.zh and error.remedy.en
        assert error.exit_code == 2
    assert rsa_signer.signed == []  # refused before anything went to the card


def test_any_root(rsa_signer: KeySigner) -> None:
    signed = sign_ceb_xml(b"<Order><a>1</a></Order>", rsa_signer, any_root=True)
    assert verify_ceb_xml(signed, any_root=True).valid
    signxml_verify(signed, rsa_signer.certificate_pem())


def test_already_signed_refused_unless_resign(rsa_signer: KeySigner,
                                              sm2_signer: KeySigner) -> None:
    signed = sign_ceb_xml(CEB311.encode(), rsa_signer)
    with pytest.raises(RecipeError, match="already has a ds:Signature"):
        sign_ceb_xml(signed, sm2_signer)
    resigned = sign_ceb_xml(signed, sm2_signer, resign=True)
    assert resigned.count(b"<ds:Signature ") == 1
    result = verify_ceb_xml(resigned)
    assert result.valid and result.key_type == "sm2"
    # Re-signing the same content gives the same digest as signing it fresh (SM3 now: the
    # RSA signature's SHA-1 digest went with it).
    digest = ".//ds:DigestValue"
    fresh = sign_ceb_xml(CEB311.encode(), sm2_signer)
    assert (signature_element(resigned).findtext(digest, namespaces=DS)
            == signature_element(fresh).findtext(digest, namespaces=DS))
    assert (signature_element(resigned).findtext(digest, namespaces=DS)
            != signature_element(signed).findtext(digest, namespaces=DS))


def test_unsigned_or_malformed_signature_is_invalid_not_an_error(rsa_signer: KeySigner) -> None:
    result = verify_ceb_xml(CEB311.encode())
    assert not result.valid and "no ds:Signature" in result.reason.en
    signed = sign_ceb_xml(CEB311.encode(), rsa_signer)
    two = signed.replace(b"</ceb:CEB311Message>",
                         signed[signed.index(b"<ds:Signature"):])
    assert "2 ds:Signature" in verify_ceb_xml(two).reason.en
    sha256 = signed.replace(b"xmldsig#sha1", b"xmlenc#sha256")
    assert "unknown DigestMethod" in verify_ceb_xml(sha256).reason.en
    no_cert = re.sub(rb"<ds:X509Data>.*</ds:X509Data>", b"", signed)
    assert "no X509Certificate" in verify_ceb_xml(no_cert).reason.en
    assert verify_ceb_xml(no_cert, rsa_signer.certificate).valid


# ---- CEB XML: the algorithm URIs (202205 edition, §6) and the older w3.org-style SM2 one ----

def wrapper_signed(signer: CardSigner, method: str, digest_method: str, *,
                   der_value: bool = False) -> bytes:
    """CEB311 signed the way other wrappers do, built here with lxml alone: the digest of the
    C14N document under `digest_method`, SignedInfo canonicalised in context and signed by
    `signer` (a software key, or the card through the gateway)."""
    root = etree.fromstring(CEB311.encode())
    hash_name = "sm3" if digest_method.endswith("#sm3") else "sha1"
    digest = hashlib.new(hash_name, etree.tostring(root.getroottree(), method="c14n")).digest()

    def ds(name: str, parent: etree._Element, **attributes: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{W3}}}{name}", attributes)

    signature = etree.SubElement(root, f"{{{W3}}}Signature", nsmap={"ds": W3})
    signed_info = ds("SignedInfo", signature)
    ds("CanonicalizationMethod", signed_info,
       Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
    ds("SignatureMethod", signed_info, Algorithm=method)
    reference = ds("Reference", signed_info, URI="")
    ds("Transform", ds("Transforms", reference), Algorithm=f"{W3}enveloped-signature")
    ds("DigestMethod", reference, Algorithm=digest_method)
    ds("DigestValue", reference).text = base64.b64encode(digest).decode()
    value = signer.sign(etree.tostring(signed_info, method="c14n"))
    if der_value:
        value = encode_dss_signature(int.from_bytes(value[:32], "big"),
                                     int.from_bytes(value[32:], "big"))
    ds("SignatureValue", signature).text = base64.b64encode(value).decode()
    key_info = ds("KeyInfo", signature)
    ds("KeyName", key_info).text = signer.certificate_number()
    ds("X509Certificate", ds("X509Data", key_info)).text = base64.b64encode(
        signer.certificate_der()).decode()
    result: bytes = etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
    return result


@pytest.mark.parametrize("digest_method", [f"{W3}sha1", f"{CHINAPORT}sm3"])
def test_old_w3_style_sm2_uri_is_read_and_named(sm2_signer: KeySigner,
                                               digest_method: str) -> None:
    old = wrapper_signed(sm2_signer, OLD_SM2, digest_method)
    result = verify_ceb_xml(old)
    assert result.valid, result
    assert (result.signature_method, result.digest_method) == (OLD_SM2, digest_method)
    assert result.signature_method_form == "w3.org-legacy"
    tampered = verify_ceb_xml(tamper(old, "张三", "张四"))
    assert not tampered.valid and not tampered.digest_ok
    assert tampered.signature_method_form == "w3.org-legacy"


def test_wrapper_written_2022_form_verifies(sm2_signer: KeySigner, tmp_path: Path) -> None:
    """Another implementation's 2022-form message verifies with ours: the two agree."""
    theirs = wrapper_signed(sm2_signer, *SM2_URIS)
    assert verify_ceb_xml(theirs).valid
    ours = sign_ceb_xml(CEB311.encode(), sm2_signer)
    assert (signature_element(ours).findtext(".//ds:DigestValue", namespaces=DS)
            == signature_element(theirs).findtext(".//ds:DigestValue", namespaces=DS))


def test_der_encoded_sm2_value_is_read(sm2_signer: KeySigner) -> None:
    """Server crypto devices answer SM2 signatures in DER; the recipe writes r || s."""
    result = verify_ceb_xml(wrapper_signed(sm2_signer, *SM2_URIS, der_value=True))
    assert result.valid, result
    assert result.signature_encoding == "der"


@pytest.mark.parametrize("element,uri", [
    ("SignatureMethod", "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"),
    ("SignatureMethod", f"{CHINAPORT}sm2"),
    ("SignatureMethod", ""),
    ("DigestMethod", "http://www.w3.org/2001/04/xmlenc#sha256"),
    ("DigestMethod", f"{W3}sm3"),
    ("CanonicalizationMethod", "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"),
])
def test_unknown_algorithm_uri_is_a_clear_refusal(sm2_signer: KeySigner, element: str,
                                                 uri: str) -> None:
    signed = sign_ceb_xml(CEB311.encode(), sm2_signer)
    node = signature_element(signed).find(f".//ds:{element}", DS)
    assert node is not None
    changed = signed.replace(f'{element} Algorithm="{node.get("Algorithm")}"'.encode(),
                             f'{element} Algorithm="{uri}"'.encode())
    assert changed != signed
    result = verify_ceb_xml(changed)
    assert not result.valid and not result.signature_ok
    shown = uri or "(empty)"
    assert f"unknown {element} algorithm: {shown}" in result.reason.en
    assert "不支持" in result.reason.zh and shown in result.reason.zh
    assert "202205" in result.remedy.en and "202205" in result.remedy.zh
    if element == "SignatureMethod":
        assert result.signature_method == uri and result.signature_method_form is None
        for known in (*RSA_URIS[:1], SM2_URIS[0], OLD_SM2):
            assert known in result.remedy.en
    if element == "DigestMethod":
        assert result.digest_method == uri
        assert RSA_URIS[1] in result.remedy.en and SM2_URIS[1] in result.remedy.en


def test_sm2_uri_on_an_rsa_certificate_does_not_fit(rsa_signer: KeySigner) -> None:
    mislabelled = wrapper_signed(rsa_signer, SM2_URIS[0], RSA_URIS[1])
    result = verify_ceb_xml(mislabelled)
    assert not result.valid and "does not fit" in result.reason.en
    assert result.remedy.en


def test_unsupported_card_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    certificate = (x509.CertificateBuilder().subject_name(_name("P-256")).issuer_name(
        _name("P-256")).public_key(key.public_key()).serial_number(1)
        .not_valid_before(not_before).not_valid_after(not_after).sign(key, hashes.SHA256()))
    signer = KeySigner(certificate.public_bytes(serialization.Encoding.DER), "01")
    with pytest.raises(CardProblem, match="unsupported certificate key type") as caught:
        sign_ceb_xml(CEB311.encode(), signer)
    assert caught.value.exit_code == 3


def test_card_signature_that_does_not_verify_is_refused(rsa_signer: KeySigner) -> None:
    impostor = KeySigner(rsa_signer.certificate, rsa_signer.number,
                         rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(CardProblem, match="does not verify"):
        sign_ceb_xml(CEB311.encode(), impostor)
    with pytest.raises(CardProblem, match="does not verify"):
        sign_payment179(json.dumps(PAY179), impostor)


def test_key_type_of_certificate(rsa_signer: KeySigner, sm2_signer: KeySigner) -> None:
    assert key_type_of_certificate(rsa_signer.certificate) == "rsa"
    assert key_type_of_certificate(sm2_signer.certificate) == "sm2"
    with pytest.raises(RecipeError):
        key_type_of_certificate(b"\x30\x03\x02\x01\x01")


# ---- announcement 179 ----

def test_179_signing_string_is_exact() -> None:
    request = parse_request(json.dumps(PAY179, ensure_ascii=False, indent=2))
    assert signing_string(request) == PAY179_STRING


def test_179_numbers_keep_their_text() -> None:
    text = json.dumps(PAY179, ensure_ascii=False).replace('"totalAmount": 100',
                                                          '"totalAmount": 100.50')
    text = text.replace('"serviceTime": "1705285800000"', '"serviceTime": 1705285800000')
    string = signing_string(parse_request(text))
    assert '"totalAmount":100.50,' in string
    assert string.endswith('||"serviceTime":"1705285800000"')


def test_179_signature(signer: KeySigner, tmp_path: Path) -> None:
    signed_text = sign_payment179(json.dumps(PAY179, ensure_ascii=False), signer)
    assert "\n" not in signed_text and ": " not in signed_text.replace("10:30:00", "")
    signed = json.loads(signed_text)
    assert list(signed) == [*PAY179, "certNo", "signValue"]
    assert {k: signed[k] for k in PAY179} == PAY179
    assert signed["certNo"] == signer.number
    signature = base64.b64decode(signed["signValue"])
    assert openssl_verify(tmp_path, signer.key_type(), signer.public_pem(),
                          PAY179_STRING.encode("utf-8"), signature)
    # Signing the result again replaces the signature fields instead of adding them.
    again = json.loads(sign_payment179(signed_text, signer))
    assert list(again) == list(signed)


@pytest.mark.parametrize("change,words", [
    (lambda r: r.pop("sessionID"), "sessionID is missing"),
    (lambda r: r.pop("serviceTime"), "serviceTime is missing"),
    (lambda r: r.pop("payExchangeInfoLists"), "payExchangeInfoLists is missing"),
    (lambda r: r.update(sessionID=12), "sessionID must be"),
    (lambda r: r.update(sessionID=""), "sessionID must be"),
    (lambda r: r.update(payExchangeInfoHead=[]), "payExchangeInfoHead must be"),
    (lambda r: r.update(payExchangeInfoLists=[]), "payExchangeInfoLists must be"),
    (lambda r: r.update(payExchangeInfoLists=["x"]), "payExchangeInfoLists[0] must be"),
    (lambda r: r.update(serviceTime=1.5), "serviceTime must be"),
    (lambda r: r.update(serviceTime=None), "serviceTime must be"),
    (lambda r: r.update(extra=1), "unknown top-level field(s): extra"),
])
def test_179_bad_fields(change: Callable[[dict[str, Any]], object], words: str) -> None:
    request = json.loads(json.dumps(PAY179))
    change(request)
    with pytest.raises(RecipeError) as caught:
        parse_request(json.dumps(request))
    assert words in caught.value.message.en, caught.value.message.en
    assert caught.value.message.zh and caught.value.remedy.en


@pytest.mark.parametrize("text,words", [
    ("", "empty"), ("[1]", "object at the top"), ("{", "not valid JSON"),
    ('{"sessionID":"a","sessionID":"b"}', "duplicate key"),
    ('{"x": NaN}', "not valid JSON"),
])
def test_179_bad_json(text: str, words: str) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_request(text)
    assert words in caught.value.message.en


def test_179_not_utf8() -> None:
    with pytest.raises(RecipeError, match="not UTF-8"):
        parse_request(json.dumps(PAY179, ensure_ascii=False).encode("gbk"))


# ---- GatewaySigner against a stand-in of the protocol ----

@dataclass
class FakeGateway:
    """Speaks the E-port client's websocket protocol for one software key: enough for
    GatewaySigner (greeting, certificate, certificate number, signing, errors)."""

    signer: KeySigner
    pin: str = PIN
    session_open: bool = False
    reported_cert_no: str | None = None  # another certificate number in sign replies
    stray_frame_first: bool = False
    echo_pin_in_error: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def handle(self, connection: ServerConnection) -> None:
        connection.send(json.dumps({"_id": 0, "_method": "open", "_status": "00"}))
        for message in connection:
            request = json.loads(message)
            self.requests.append(request)
            if self.stray_frame_first:
                connection.send(json.dumps({"_id": "other", "_method": "x", "_status": "00",
                                            "_args": {"Result": True, "Data": [], "Error": []}}))
            result, data, error = self.answer(request["_method"], request.get("args", {}))
            connection.send(json.dumps({
                "_id": request["_id"], "_method": request["_method"], "_status": "00",
                "_args": {"Result": result, "Data": data, "Error": error}}, ensure_ascii=False))

    def answer(self, method: str, args: dict[str, str]) -> tuple[bool, list[Any], list[str]]:
        if method == "cus-sec_SpcGetSignCertAsPEM":
            return True, [base64.b64encode(self.signer.certificate).decode()], []
        if method == "cus-sec_SpcGetCertNo":
            return True, [self.signer.number], []
        if method == "cus-sec_SpcSignDataAsPEM":
            if "passwd" in args:
                if args["passwd"] != self.pin:
                    shown = f" ({args['passwd']})" if self.echo_pin_in_error else ""
                    return False, [], [f"口令不正确,还可以重试2次{shown}", "Err:Custom0A000024",
                                       f"wrong PIN, 2 tries left{shown}"]
            elif not self.session_open:
                return False, [], ["尚未验证口令", "Err:Custom0A00002D"]
            signature = self.signer.sign(args["inData"].encode("utf-8"))
            return True, [base64.b64encode(signature).decode(),
                          self.reported_cert_no or self.signer.number], []
        return False, [], ["输入参数错误", "Err:Custom51500", "bad request"]


@pytest.fixture
def fake_gateway(rsa_signer: KeySigner) -> Iterator[FakeGateway]:
    gateway = FakeGateway(rsa_signer)
    with serve(gateway.handle, "127.0.0.1", 0) as server:
        gateway.server = server
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield gateway
        server.shutdown()
        thread.join(5)


def test_gateway_signer_signs(fake_gateway: FakeGateway, rsa_signer: KeySigner) -> None:
    fake_gateway.stray_frame_first = True
    with GatewaySigner(fake_gateway.url, pin=PIN, timeout=5) as signer:
        assert signer.certificate_der() == rsa_signer.certificate
        assert signer.certificate_number() == rsa_signer.number
        assert signer.key_type() == "rsa"
        signed = sign_ceb_xml(CEB311.encode(), signer)
        assert PIN not in repr(signer)
    assert verify_ceb_xml(signed).valid
    sign_request = fake_gateway.requests[-1]
    assert sign_request["_method"] == "cus-sec_SpcSignDataAsPEM"
    assert sign_request["args"]["passwd"] == PIN
    assert sign_request["args"]["inData"].startswith("<ds:SignedInfo ")
    assert len({r["_id"] for r in fake_gateway.requests}) == len(fake_gateway.requests)


def test_gateway_signer_without_pin_uses_the_session(fake_gateway: FakeGateway) -> None:
    with GatewaySigner(fake_gateway.url, timeout=5) as signer:
        with pytest.raises(GatewayReplyError) as caught:
            signer.sign(b"text")
        assert caught.value.code == "0A00002D"
        assert caught.value.message.zh == "尚未验证口令"
        fake_gateway.session_open = True
        assert signer.sign("数据".encode())
    signing = [r for r in fake_gateway.requests if r["_method"] == "cus-sec_SpcSignDataAsPEM"]
    assert [r["args"] for r in signing] == [{"inData": "text"}, {"inData": "数据"}]


def test_gateway_error_never_carries_the_pin(fake_gateway: FakeGateway) -> None:
    fake_gateway.echo_pin_in_error = True
    with GatewaySigner(fake_gateway.url, pin="13572468", timeout=5) as signer, \
            pytest.raises(GatewayReplyError) as caught:
        signer.sign(b"text")
    error = caught.value
    assert error.code == "0A000024" and "wrong PIN" in error.message.en
    assert "13572468" not in f"{error} {error.message.zh} {error.message.en} {error.args}"


def test_gateway_card_swapped_between_calls(fake_gateway: FakeGateway) -> None:
    fake_gateway.reported_cert_no = "ffffffff"
    with GatewaySigner(fake_gateway.url, pin=PIN, timeout=5) as signer, \
            pytest.raises(GatewayReplyError) as caught:
        sign_ceb_xml(CEB311.encode(), signer)
    assert caught.value.code == "card-changed"


def test_gateway_unreachable_and_refused(fake_gateway: FakeGateway) -> None:
    with GatewaySigner("ws://127.0.0.1:9", timeout=5) as signer, \
            pytest.raises(GatewayReplyError) as caught:
        signer.certificate_number()
    assert caught.value.code == "unreachable"
    assert "eport-gateway" in caught.value.message.en
    # A server that checks Origin (as eport-gateway does) answers 403 at the handshake.
    with serve(fake_gateway.handle, "127.0.0.1", 0,
               origins=[Origin("https://www.singlewindow.cn")]) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        with GatewaySigner(url, origin="https://evil.example", timeout=5) as signer, \
                pytest.raises(GatewayReplyError) as caught:
            signer.certificate_number()
        assert caught.value.code == "refused" and "403" in caught.value.message.en
        with GatewaySigner(url, origin="https://www.singlewindow.cn", timeout=5) as signer:
            assert signer.certificate_number()
        server.shutdown()


def test_gateway_signer_is_a_card_signer() -> None:
    signer: CardSigner = GatewaySigner()
    assert isinstance(signer, GatewaySigner)


# ---- the CLI ----

@dataclass
class Result:
    """What a person sees of `eport-gateway RECIPE ARGS`: exit code and the two streams."""

    exit_code: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode()

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(command: click.Command, *args: str, stdin: str | bytes | None = None) -> Result:
    """The recipe as eport-gateway runs it: through its console funnel (errors included)."""
    assert command.name is not None
    with CliRunner().isolation(input=stdin) as (stdout, stderr, _mixed):
        code = gateway_main([command.name, *args])
    result = Result(code, stdout.getvalue(), stderr.getvalue().decode())
    assert "Traceback" not in result.output
    return result


def test_commands_are_exported() -> None:
    assert [c.name for c in RECIPE_COMMANDS] == ["ceb-sign", "ceb-verify", "pay179-sign"]


def test_cli_ceb_sign_and_verify(fake_gateway: FakeGateway, tmp_path: Path,
                                 rsa_signer: KeySigner) -> None:
    message = tmp_path / "order.xml"
    message.write_text(CEB311, encoding="utf-8")
    out = tmp_path / "signed.xml"
    result = run(ceb_sign_command, str(message), "-o", str(out), "--url", fake_gateway.url,
                 "--pin-stdin", stdin=f"{PIN}\n")
    assert result.exit_code == 0, result.output
    assert "signed with certificate 0a1b2c3d" in result.stderr and "已签名" in result.stderr
    assert PIN not in result.output
    signxml_verify(out.read_bytes(), rsa_signer.certificate_pem())

    verified = run(ceb_verify_command, str(out))
    assert verified.exit_code == 0, verified.output
    assert "signature valid" in verified.stdout and "签名有效" in verified.stdout
    assert "0a1b2c3d" in verified.stdout

    cert = tmp_path / "cert.pem"
    cert.write_text(rsa_signer.certificate_pem())
    assert run(ceb_verify_command, str(out), "--cert", str(cert)).exit_code == 0

    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(tamper(out.read_bytes(), "张三", "王五"))
    invalid = run(ceb_verify_command, str(tampered))
    assert invalid.exit_code == 1
    assert "NOT valid" in invalid.stdout and "digest mismatch" in invalid.stdout


def test_cli_ceb_verify_names_the_uris(sm2_signer: KeySigner, tmp_path: Path) -> None:
    current = tmp_path / "2022.xml"
    current.write_bytes(sign_ceb_xml(CEB311.encode(), sm2_signer))
    result = run(ceb_verify_command, str(current))
    assert result.exit_code == 0, result.output
    assert f"signature method: {SM2_URIS[0]} (" in result.stdout
    assert "the SM2 URI of the 202205 specification" in result.stdout
    assert f"digest method: {SM2_URIS[1]}" in result.stdout
    assert "r||s, 64 bytes" in result.stdout
    assert "older" not in result.stdout

    old = tmp_path / "old.xml"
    old.write_bytes(wrapper_signed(sm2_signer, OLD_SM2, f"{W3}sha1"))
    result = run(ceb_verify_command, str(old))
    assert result.exit_code == 0, result.output
    assert "signature valid" in result.stdout
    assert f"signature method: {OLD_SM2} (" in result.stdout
    assert "older w3.org-style SM2 URI" in result.stdout and "旧式" in result.stdout
    assert f"digest method: {W3}sha1" in result.stdout
    assert "ceb-sign --resign" in result.stdout

    unknown = tmp_path / "unknown.xml"
    unknown.write_bytes(old.read_bytes().replace(OLD_SM2.encode(), f"{W3}sm2".encode()))
    result = run(ceb_verify_command, str(unknown))
    assert result.exit_code == 1
    assert f"unknown SignatureMethod algorithm: {W3}sm2" in result.stdout
    assert "Remedy:" in result.stdout and "解决办法:" in result.stdout


def test_cli_ceb_verify_json(sm2_signer: KeySigner, tmp_path: Path) -> None:
    def verify_json(content: bytes) -> tuple[int, dict[str, Any]]:
        path = tmp_path / "m.xml"
        path.write_bytes(content)
        result = run(ceb_verify_command, str(path), "--json")
        assert result.stdout.count("\n") == 1, result.stdout  # one document
        return result.exit_code, json.loads(result.stdout)

    code, document = verify_json(sign_ceb_xml(CEB311.encode(), sm2_signer))
    assert code == 0 and document["ok"] is True and document["command"] == "ceb-verify"
    assert document["result"] == {
        "valid": True, "certificate_number": "01691fe9",
        "certificate_serial": "1691fe9", "key_type": "sm2",
        "signature_method": SM2_URIS[0], "signature_method_form": "chinaport-2022",
        "digest_method": SM2_URIS[1], "signature_encoding": "r||s",
        "digest_ok": True, "signature_ok": True, "certificate_source": "document",
        "document_certificate_matches": None}

    old = wrapper_signed(sm2_signer, OLD_SM2, f"{CHINAPORT}sm3")
    code, document = verify_json(old)
    assert code == 0
    assert document["result"]["signature_method"] == OLD_SM2
    assert document["result"]["signature_method_form"] == "w3.org-legacy"
    assert document["result"]["digest_method"] == f"{CHINAPORT}sm3"

    code, document = verify_json(tamper(old, "张三", "张四"))
    assert code == 1 and document["ok"] is False
    error = document["error"]
    assert (error["code"], error["exit_code"], error["valid"]) == ("SIGNATURE_INVALID", 1, False)
    assert "digest mismatch" in error["message"]["en"] and error["message"]["zh"]
    assert error["signature_method_form"] == "w3.org-legacy"

    code, document = verify_json(b"<not xml")
    assert code == 2 and document["ok"] is False
    assert document["error"]["code"] == "BAD_INPUT"
    assert "well-formed" in document["error"]["message"]["en"]
    assert document["error"]["remedy"]["zh"]


def test_cli_ceb_sign_to_stdout_from_stdin(fake_gateway: FakeGateway) -> None:
    fake_gateway.session_open = True
    result = run(ceb_sign_command, "-", "--url", fake_gateway.url, stdin=CEB311.encode())
    assert result.exit_code == 0, result.output
    assert verify_ceb_xml(result.stdout_bytes).valid


def test_cli_pay179_sign(fake_gateway: FakeGateway, tmp_path: Path,
                         rsa_signer: KeySigner) -> None:
    request = tmp_path / "pay.json"
    request.write_text(json.dumps(PAY179, ensure_ascii=False, indent=2), encoding="utf-8")
    result = run(pay179_sign_command, str(request), "--url", fake_gateway.url, "--pin-stdin",
                 stdin=f"{PIN}\n")
    assert result.exit_code == 0, result.output
    signed = json.loads(result.stdout)
    assert signed["certNo"] == rsa_signer.number
    assert fake_gateway.requests[-1]["args"]["inData"] == PAY179_STRING


@pytest.mark.parametrize("command,content,words", [
    (ceb_sign_command, b"", "the input is empty"),
    (ceb_sign_command, b"<a", "not well-formed XML"),
    (ceb_sign_command, b"<Order/>", "not in the CEB namespace"),
    (ceb_verify_command, b'<!DOCTYPE a><a/>', "DOCTYPE"),
    (pay179_sign_command, b'{"sessionID": "x"}', "payExchangeInfoHead is missing"),
])
def test_cli_bad_input_exits_2(command: click.Command, content: bytes, words: str,
                               tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    # The URL leads nowhere: bad input must be reported before any connection or PIN.
    result = run(command, str(path), *([] if command is ceb_verify_command
                                      else ["--url", "ws://127.0.0.1:9"]))
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert "错误 [BAD_INPUT]:" in result.stderr and "Error [BAD_INPUT]:" in result.stderr
    assert "解决办法:" in result.stderr and "Remedy:" in result.stderr


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(ceb_sign_command, str(tmp_path / "missing.xml")).exit_code == 2
    assert run(ceb_sign_command, "-", "--pin-stdin", stdin="x").exit_code == 2
    message = tmp_path / "m.xml"
    message.write_text(CEB311, encoding="utf-8")
    empty_pin = run(ceb_sign_command, str(message), "--pin-stdin", stdin="\n")
    assert empty_pin.exit_code == 2 and "no PIN on stdin" in empty_pin.stderr
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate")
    bad_cert = run(ceb_verify_command, str(message), "--cert", str(cert))
    assert bad_cert.exit_code == 2 and "neither PEM nor DER" in bad_cert.stderr


def test_cli_gateway_errors_exit_3(fake_gateway: FakeGateway, tmp_path: Path) -> None:
    message = tmp_path / "m.xml"
    message.write_text(CEB311, encoding="utf-8")
    unreachable = run(ceb_sign_command, str(message), "--url", "ws://127.0.0.1:9")
    assert unreachable.exit_code == 3 and "[unreachable]" in unreachable.stderr
    fake_gateway.echo_pin_in_error = True
    wrong = run(ceb_sign_command, str(message), "-o", str(tmp_path / "out.xml"), "--url",
                fake_gateway.url, "--pin-stdin", stdin="24682468\n")
    assert wrong.exit_code == 3
    assert "[0A000024]" in wrong.stderr and "口令不正确" in wrong.stderr
    assert "24682468" not in wrong.output
    assert not (tmp_path / "out.xml").exists()


def test_verification_result_is_frozen(rsa_signer: KeySigner) -> None:
    result: VerificationResult = verify_ceb_xml(sign_ceb_xml(CEB311.encode(), rsa_signer))
    with pytest.raises(AttributeError):
        result.valid = False  # type: ignore[misc]


def test_gateway_group_has_the_recipes() -> None:
    """eport-gateway's click group adds RECIPE_COMMANDS (its import swallows ImportError, so a
    broken recipes module would silently vanish from the CLI)."""
    from eport.clients.gateway.command import main_group

    assert isinstance(main_group, click.Group)
    assert {"ceb-sign", "ceb-verify", "pay179-sign"} <= set(main_group.commands)
