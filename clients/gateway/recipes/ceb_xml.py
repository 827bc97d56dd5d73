"""Signing CEB XML messages (跨境电商 CEBxxxMessage) the way the E-port data centre expects.

The signature is an enveloped XML-DSig signature, the last child of the root element; the
algorithm URIs are those of the 202205 edition of the CEB message specification (§6, see
algorithms.py): on an SM2 card

    <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
      <ds:SignedInfo>
        <ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
        <ds:SignatureMethod Algorithm="http://www.chinaport.gov.cn/2022/04/xmldsig#sm2-sm3"/>
        <ds:Reference URI="">
          <ds:Transforms><ds:Transform Algorithm="...#enveloped-signature"/></ds:Transforms>
          <ds:DigestMethod Algorithm="http://www.chinaport.gov.cn/2022/04/xmldsig#sm3"/>
          <ds:DigestValue>base64 SM3 of the C14N of the document without the signature</>
        </ds:Reference>
      </ds:SignedInfo>
      <ds:SignatureValue>the card's signature over the C14N of SignedInfo</ds:SignatureValue>
      <ds:KeyInfo><ds:KeyName>certificate number</ds:KeyName>
        <ds:X509Data><ds:X509Certificate>base64 DER</ds:X509Certificate></ds:X509Data>
      </ds:KeyInfo>
    </ds:Signature>

and on an RSA card `...xmldsig#rsa-sha1` with a `...xmldsig#sha1` digest (written without the
whitespace shown here). Only SignedInfo's canonical form goes to the card, so the size of the
message does not matter to the E-port client.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from eport.clients.gateway.recipes.algorithms import (
    C14N_10,
    DIGEST_ALGORITHMS,
    DS_NS,
    ENVELOPED,
    SIGNATURE_ALGORITHMS,
    WRITTEN,
    DigestAlgorithm,
    MethodForm,
    SignatureAlgorithm,
)
from eport.clients.gateway.recipes.certificates import (
    CertificateKey,
    KeyType,
    certificate_key,
    sm2_raw_signature,
)
from eport.clients.gateway.recipes.errors import NO_REMEDY, CardProblem, RecipeError
from eport.clients.gateway.recipes.signer import CardSigner
from eport.clients.gateway.recipes.xmldoc import (
    XmlDocument,
    canonical_document,
    canonical_subtree,
    detach,
    parse_document,
)
from eport.common.failure import EportFailure
from eport.common.text import Bilingual

__all__ = ["CEB_NS", "DS_NS", "VerificationResult", "check_ceb_input", "sign_ceb_xml",
           "verify_ceb_xml"]

CEB_NS = "http://www.chinaport.gov.cn/ceb"

# How the SignatureValue's bytes were written: PKCS#1 v1.5 (RSA), the E-port client's r || s
# (SM2, 64 bytes; what the recipe writes) or a DER SEQUENCE of r and s (SM2, what some
# server crypto devices return).
SignatureEncoding = Literal["pkcs1", "r||s", "der"]


def _ds(name: str) -> str:
    return f"{{{DS_NS}}}{name}"


# ---- signing ----

def sign_ceb_xml(xml: bytes, signer: CardSigner, *, any_root: bool = False,
                 resign: bool = False) -> bytes:
    """The signed document (UTF-8). RecipeError for bad input, CardProblem when the card's key
    is unusable or its signature does not verify; the signer's own errors pass through."""
    document = check_ceb_input(xml, any_root=any_root, resign=resign)
    for old in list(document.root.iter(_ds("Signature"))):
        if old is document.root:
            raise RecipeError(
                Bilingual("根元素本身是 ds:Signature", "the root element is a ds:Signature"),
                Bilingual("请提供 CEB 报文本身", "give the CEB message itself"))
        detach(old)

    key = certificate_key(signer.certificate_der())
    certificate_number = signer.certificate_number()
    method, digest_method = WRITTEN[key.key_type]
    # The digest is taken before the signature is added, which is what the enveloped-signature
    # transform reproduces when a verifier removes it again.
    digest = base64.b64encode(digest_method.hash(canonical_document(document.tree)))
    signature = _append_signature(document.root, key, certificate_number, method,
                                  digest_method, digest.decode())
    signed_info = signature[0]
    to_sign = canonical_subtree(signed_info)
    # The card signs SHA1withRSA, or SM2 over SM3(Z || SignedInfo) with the default user id;
    # the E-port client returns SM2 signatures as r || s, which is what the value holds.
    value = signer.sign(to_sign)
    if key.key_type == "sm2":
        value = sm2_raw_signature(value)
    # Checked here so a wrong card, certificate or algorithm fails now and not at customs.
    if not key.verify(to_sign, value):
        raise CardProblem(
            Bilingual("卡片返回的签名无法用其证书验证",
                      "the card's signature does not verify with its certificate"),
            Bilingual("请确认插入的是本人的电子口岸卡, 然后重试",
                      "check that the right E-port card is inserted, then try again"))
    signature[1].text = base64.b64encode(value).decode()
    return document.to_bytes()


def check_ceb_input(xml: bytes, *, any_root: bool = False, resign: bool = False
                    ) -> XmlDocument:
    """Parse the message and check it can be signed (no card needed): RecipeError if not."""
    document = parse_document(xml)
    _check_root(document, any_root)
    if not resign and next(document.root.iter(_ds("Signature")), None) is not None:
        raise RecipeError(
            Bilingual("报文已含 ds:Signature 签名", "the message already has a ds:Signature"),
            Bilingual("如需重新签名, 请加 --resign (将删除原有签名)",
                      "to sign it again, add --resign (the old signature is removed)"))
    return document


def _append_signature(root: etree._Element, key: CertificateKey, certificate_number: str,
                      method: SignatureAlgorithm, digest_method: DigestAlgorithm,
                      digest: str) -> etree._Element:
    signature = etree.SubElement(root, _ds("Signature"), nsmap={"ds": DS_NS})
    signed_info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(signed_info, _ds("CanonicalizationMethod"), Algorithm=C14N_10)
    etree.SubElement(signed_info, _ds("SignatureMethod"), Algorithm=method.uri)
    reference = etree.SubElement(signed_info, _ds("Reference"), URI="")
    transforms = etree.SubElement(reference, _ds("Transforms"))
    etree.SubElement(transforms, _ds("Transform"), Algorithm=ENVELOPED)
    etree.SubElement(reference, _ds("DigestMethod"), Algorithm=digest_method.uri)
    etree.SubElement(reference, _ds("DigestValue")).text = digest
    etree.SubElement(signature, _ds("SignatureValue"))
    key_info = etree.SubElement(signature, _ds("KeyInfo"))
    etree.SubElement(key_info, _ds("KeyName")).text = certificate_number
    x509_data = etree.SubElement(key_info, _ds("X509Data"))
    etree.SubElement(x509_data, _ds("X509Certificate")).text = base64.b64encode(
        key.der).decode()
    return signature


def _check_root(document: XmlDocument, any_root: bool) -> None:
    namespace = etree.QName(document.root).namespace
    if namespace != CEB_NS and not any_root:
        raise RecipeError(
            Bilingual(f"根元素 {document.root.tag} 不在 CEB 命名空间 {CEB_NS} 中",
                      f"the root element {document.root.tag} is not in the CEB namespace {CEB_NS}"),
            Bilingual("请确认这是 CEB 报文; 若确需处理其他 XML, 请加 --any-root",
                      "check that this is a CEB message; to sign other XML anyway, add --any-root"))


# ---- verification ----

@dataclass(frozen=True)
class VerificationResult:
    valid: bool
    reason: Bilingual  # why not valid; empty when valid
    certificate_number: str | None  # the KeyName
    certificate_serial: str | None  # of the certificate used, lowercase hex
    key_type: KeyType | None
    signature_method: str | None  # the SignatureMethod URI, as written (also when unknown)
    digest_ok: bool
    signature_ok: bool
    certificate_der: bytes | None
    certificate_source: Literal["given", "document"] | None
    # False when a certificate was given and the document embeds a different one.
    document_certificate_matches: bool | None
    digest_method: str | None = None  # the DigestMethod URI, as written (also when unknown)
    # Which naming of the signature algorithm the message uses; None when it is unknown.
    signature_method_form: MethodForm | None = None
    signature_encoding: SignatureEncoding | None = None
    remedy: Bilingual = NO_REMEDY  # what to do about it, when not valid


class _Invalid(EportFailure):
    """Why a signature is not valid: verify_ceb_xml turns it into its result, never raises it."""

    code = "SIGNATURE_NOT_VALID"

    def __init__(self, reason: Bilingual, remedy: Bilingual = NO_REMEDY) -> None:
        super().__init__(reason.en)
        self.message = reason
        self.remedy = remedy


@dataclass
class _Seen:
    """What the signature declares, gathered as it is read, so that a result that stops at an
    unknown algorithm still shows the URIs it found."""

    signature_method: str | None = None
    digest_method: str | None = None
    method: SignatureAlgorithm | None = None
    encoding: SignatureEncoding | None = None


@dataclass
class _Parts:
    signature: etree._Element
    signed_info: etree._Element
    method: SignatureAlgorithm
    digest_method: DigestAlgorithm
    digest: bytes
    value: bytes
    key_name: str | None
    embedded_certificate: bytes | None


def verify_ceb_xml(xml: bytes, certificate_der: bytes | None = None, *,
                   any_root: bool = False) -> VerificationResult:
    """Check the document's enveloped signature: the digest and the SignatureValue, with the
    given certificate or else the one in X509Certificate. Only the signature is checked, not
    whether the certificate is trusted or still valid.

    Reads the 202205 specification's algorithm URIs and the older w3.org-style SM2 one
    (`signature_method_form` says which). RecipeError for input that is not a CEB XML
    document; a document whose signature is missing, malformed, wrong or uses an algorithm
    URI we do not know gives a result with valid=False and the reason."""
    document = parse_document(xml)
    _check_root(document, any_root)
    given_key = certificate_key(certificate_der) if certificate_der is not None else None
    seen = _Seen()
    parts: _Parts | None = None
    key: CertificateKey | None = given_key
    digest_ok = signature_ok = False
    try:
        parts = _signature_parts(document, seen)
        if key is None:
            key = _embedded_key(parts)
        if parts.method.key_type != key.key_type:
            raise _Invalid(
                Bilingual(f"签名算法 {parts.method.uri} 与证书的 {key.key_type} 密钥不符",
                          f"the signature method {parts.method.uri} does not fit the "
                          f"certificate's {key.key_type} key"),
                Bilingual("请用签名者的证书验证 (--cert), 或用该证书的卡重新签名",
                          "verify with the signer's certificate (--cert), or sign again with "
                          "that card"))
        value, seen.encoding = _signature_value(key, parts.value)
        # SignedInfo is canonicalised with the signature in place (its context counts); the
        # digest after the signature is taken out (the enveloped-signature transform).
        signature_ok = key.verify(canonical_subtree(parts.signed_info), value)
        detach(parts.signature)
        digest_ok = parts.digest_method.hash(canonical_document(document.tree)) == parts.digest
        if not digest_ok:
            raise _Invalid(
                Bilingual("摘要不符: 报文在签名后被修改过",
                          "digest mismatch: the message was changed after it was signed"),
                Bilingual("请用未修改的原始报文重新签名", "sign the unchanged message again"))
        if not signature_ok:
            raise _Invalid(
                Bilingual("签名值验证失败: 签名信息被修改, 或证书不是签名者的",
                          "the SignatureValue does not verify: SignedInfo was changed, or the "
                          "certificate is not the signer's"),
                Bilingual("请确认所用证书是签名者的, 或重新签名",
                          "check that the certificate is the signer's, or sign again"))
        reason, remedy = NO_REMEDY, NO_REMEDY  # valid: nothing to explain
    except _Invalid as invalid:
        reason, remedy = invalid.message, invalid.remedy
    matches = None
    if given_key is not None and parts is not None and parts.embedded_certificate is not None:
        matches = parts.embedded_certificate == given_key.der
    return VerificationResult(
        valid=digest_ok and signature_ok, reason=reason,
        certificate_number=parts.key_name if parts else None,
        certificate_serial=key.serial_hex if key else None,
        key_type=key.key_type if key else None,
        signature_method=seen.signature_method,
        digest_ok=digest_ok, signature_ok=signature_ok,
        certificate_der=key.der if key else None,
        certificate_source=None if key is None else "given" if given_key else "document",
        document_certificate_matches=matches,
        digest_method=seen.digest_method,
        signature_method_form=seen.method.form if seen.method else None,
        signature_encoding=seen.encoding,
        remedy=remedy)


def _embedded_key(parts: _Parts) -> CertificateKey:
    if parts.embedded_certificate is None:
        raise _Invalid(
            Bilingual("签名中没有 X509Certificate, 且未提供证书",
                      "the signature has no X509Certificate and no certificate was given"),
            Bilingual("请用 --cert 提供签名者的证书",
                      "give the signer's certificate with --cert"))
    try:
        return certificate_key(parts.embedded_certificate)
    except RecipeError as exc:
        raise _Invalid(
            Bilingual(f"签名中的证书无法使用: {exc.message.zh}",
                      f"the signature's certificate is unusable: {exc.message.en}"),
            Bilingual("请用 --cert 提供签名者的证书",
                      "give the signer's certificate with --cert")) from None


def _signature_value(key: CertificateKey, value: bytes) -> tuple[bytes, SignatureEncoding]:
    """The value as the key checks it, and how it was written."""
    if key.key_type == "rsa":
        return value, "pkcs1"
    if len(value) == 64:
        return value, "r||s"
    raw = sm2_raw_signature(value)
    if len(raw) != 64:
        raise _Invalid(
            Bilingual(f"SM2 签名值应为 64 字节 r||s 或 DER 编码, 实际为 {len(value)} "
                      "字节且无法解析",
                      f"an SM2 SignatureValue is 64 bytes r||s or DER, this one is {len(value)} "
                      "bytes and neither"),
            Bilingual("请重新签名", "sign the message again"))
    return raw, "der"


def _signature_parts(document: XmlDocument, seen: _Seen) -> _Parts:
    signatures = list(document.root.iter(_ds("Signature")))
    if not signatures:
        raise _Invalid(
            Bilingual("报文没有 ds:Signature 签名", "the message has no ds:Signature"),
            Bilingual("请先用 eport-gateway ceb-sign 签名",
                      "sign it first with eport-gateway ceb-sign"))
    if len(signatures) > 1:
        raise _Invalid(
            Bilingual(f"报文有 {len(signatures)} 个 ds:Signature, 应只有一个",
                      f"the message has {len(signatures)} ds:Signature elements, not one"))
    signature = signatures[0]
    if signature.getparent() is not document.root:
        raise _Invalid(
            Bilingual("ds:Signature 不是根元素的子元素",
                      "the ds:Signature is not a child of the root element"))
    signed_info = _child(signature, "SignedInfo")
    canonicalization = _algorithm(_child(signed_info, "CanonicalizationMethod"))
    if canonicalization != C14N_10:
        raise _unknown_algorithm("CanonicalizationMethod", "规范化算法", canonicalization,
                                 [C14N_10])
    seen.signature_method = _algorithm(_child(signed_info, "SignatureMethod"))
    references = signed_info.findall(_ds("Reference"))
    if len(references) != 1 or references[0].get("URI") != "":
        raise _Invalid(
            Bilingual("SignedInfo 应只有一个 URI=\"\" 的 Reference",
                      "SignedInfo must have exactly one Reference, with URI=\"\""))
    reference = references[0]
    seen.digest_method = _algorithm(_child(reference, "DigestMethod"))
    method = SIGNATURE_ALGORITHMS.get(seen.signature_method)
    if method is None:
        raise _unknown_algorithm("SignatureMethod", "签名算法", seen.signature_method,
                                 list(SIGNATURE_ALGORITHMS))
    seen.method = method
    digest_method = DIGEST_ALGORITHMS.get(seen.digest_method)
    if digest_method is None:
        raise _unknown_algorithm("DigestMethod", "摘要算法", seen.digest_method,
                                 list(DIGEST_ALGORITHMS))
    transforms = [_algorithm(t) for t in reference.iterfind(f"{_ds('Transforms')}/"
                                                             f"{_ds('Transform')}")]
    # A trailing C14N 1.0 transform changes nothing: it is what turns the node set into bytes.
    if transforms not in ([ENVELOPED], [ENVELOPED, C14N_10]):
        raise _unknown_algorithm("Transforms", "变换", " ".join(transforms) or "(none)",
                                 [ENVELOPED, f"{ENVELOPED} {C14N_10}"])
    key_name = signature.findtext(f"{_ds('KeyInfo')}/{_ds('KeyName')}")
    certificate_text = signature.findtext(
        f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509Certificate')}")
    return _Parts(
        signature=signature, signed_info=signed_info, method=method,
        digest_method=digest_method,
        digest=_base64(_child(reference, "DigestValue").text, "DigestValue"),
        value=_base64(_child(signature, "SignatureValue").text, "SignatureValue"),
        key_name=key_name.strip() if key_name else None,
        embedded_certificate=(_base64(certificate_text, "X509Certificate")
                              if certificate_text and certificate_text.strip() else None))


def _child(parent: etree._Element, name: str) -> etree._Element:
    child = parent.find(_ds(name))
    if child is None:
        raise _Invalid(
            Bilingual(f"签名缺少 ds:{name}", f"the signature has no ds:{name}"))
    return child


def _algorithm(element: etree._Element) -> str:
    return element.get("Algorithm") or ""


def _unknown_algorithm(what: str, what_zh: str, algorithm: str, known: list[str]) -> _Invalid:
    shown = algorithm or "(empty)"
    listed = ", ".join(known)
    return _Invalid(
        Bilingual(f"不支持的{what_zh} ({what}): {shown}", f"unknown {what} algorithm: {shown}"),
        Bilingual(f"可验证的{what_zh}: {listed}。请让签名方按《海关跨境电商统一版系统企业对接报文"
                  "规范（202205版）》第 6 章签名",
                  f"the {what} algorithms this verifier knows: {listed}. Ask the signer to sign "
                  "as §6 of the CEB message specification (202205 edition) says"))


def _base64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(Bilingual(f"ds:{what} 不是 base64", f"ds:{what} is not base64")) from None
