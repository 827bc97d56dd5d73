"""Reading, canonicalising and writing the XML documents the CEB recipe signs.

Parsing is locked down: no network, no entity expansion, and a DOCTYPE is refused outright
(a CEB message never has one, and a DTD could redefine what the signed text means).

Canonicalisation is inclusive C14N 1.0 without comments, as the E-port data centre expects.
One rule of C14N 1.0 that lxml does not apply by itself: when a subtree is canonicalised in
its document (SignedInfo, here), the xml:* attributes it inherits (xml:lang, xml:space, ...)
are written on its top element. lxml already writes the inherited namespace declarations.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from lxml import etree

from eport.clients.gateway.recipes.errors import RecipeError
from eport.common.text import Bilingual

XML_NS = "http://www.w3.org/XML/1998/namespace"


@dataclass
class XmlDocument:
    tree: etree._ElementTree
    had_declaration: bool

    @property
    def root(self) -> etree._Element:
        return self.tree.getroot()

    def to_bytes(self) -> bytes:
        """The document in UTF-8, with an XML declaration when the input had one.

        The declaration is written by hand because the input's may have named another encoding
        (GBK, say) and lxml would write a single-quoted one.
        """
        body: bytes = etree.tostring(self.tree, encoding="UTF-8", xml_declaration=False)
        if not self.had_declaration:
            return body
        standalone = ' standalone="yes"' if self.tree.docinfo.standalone else ""
        return f'<?xml version="1.0" encoding="UTF-8"{standalone}?>\n'.encode() + body


def parse_document(data: bytes) -> XmlDocument:
    if not data.strip():
        raise RecipeError(
            Bilingual("输入为空", "the input is empty"),
            Bilingual("请提供要签名或验证的 XML 报文",
                      "give the XML message to sign or verify"))
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, strip_cdata=False,
                             remove_blank_text=False)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise RecipeError(
            Bilingual(f"输入不是格式正确的 XML: {exc}",
                      f"the input is not well-formed XML: {exc}"),
            Bilingual("请检查文件是否完整、编码是否与 XML 声明一致",
                      "check that the file is complete and that its encoding matches its XML "
                      "declaration")) from None
    tree = root.getroottree()
    # libxml2 records any <!DOCTYPE ...>, with or without an internal subset, as internalDTD.
    if tree.docinfo.internalDTD is not None:
        raise RecipeError(
            Bilingual("XML 含有 DOCTYPE 声明, 出于安全原因拒绝处理",
                      "the XML has a DOCTYPE declaration, which is refused for safety"),
            Bilingual("CEB 报文不应含 DOCTYPE; 请删除 <!DOCTYPE ...> 部分",
                      "CEB messages have no DOCTYPE: remove the <!DOCTYPE ...> part"))
    return XmlDocument(tree, _has_declaration(data))


def _has_declaration(data: bytes) -> bool:
    head = data[:256]
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):
        if head.startswith(bom):
            text = head[len(bom):].decode(encoding, errors="ignore")
            break
    else:
        text = head.decode("latin-1")  # the declaration itself is ASCII
    return len(text) > 5 and text.startswith("<?xml") and text[5].isspace()


def canonical_document(tree: etree._ElementTree) -> bytes:
    """Inclusive C14N 1.0 without comments of the whole document (Reference URI="")."""
    result: bytes = etree.tostring(tree, method="c14n", exclusive=False, with_comments=False)
    return result


def canonical_subtree(element: etree._Element) -> bytes:
    """Inclusive C14N 1.0 without comments of `element` in its document context."""
    added: list[str] = []
    for ancestor in element.iterancestors():
        for name, value in ancestor.attrib.items():
            # The nearest ancestor's value wins; one set on the element itself wins over all.
            if str(name).startswith(f"{{{XML_NS}}}") and name not in element.attrib:
                element.set(name, value)
                added.append(str(name))
    try:
        result: bytes = etree.tostring(element, method="c14n", exclusive=False,
                                       with_comments=False)
    finally:
        for name in added:
            del element.attrib[name]
    return result


def detach(element: etree._Element) -> None:
    """Remove `element` but keep the text that follows it: that text is outside the element
    (an enveloped signature's tail belongs to the signed content), and lxml would drop it."""
    parent = element.getparent()
    if parent is None:
        raise ValueError("cannot detach the root element")
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    element.tail = None
    parent.remove(element)
