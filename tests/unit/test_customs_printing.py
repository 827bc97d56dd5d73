"""`eport customs print`'s renderer: the PDF is read back with poppler (pdfinfo, pdftotext,
pdffonts, pdftoppm), as an independent reader, and the barcode is decoded from the rendered
pixels with a Code 128 decoder written here from the symbology's published pattern table."""

from __future__ import annotations

import html
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from eport.clients.customs import print_layout
from eport.clients.customs.print_layout import LEADING, PrintError, find_font_file, fit
from eport.clients.customs.printing import (
    PrintRecord,
    render_declaration_pdf,
    write_declaration_pdf,
)
from tests.support.customs_documents import valid_declaration, valid_filing_list

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                reason="poppler-utils (pdftotext, pdftoppm) is not installed")

PRINTED_AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
DECLARED = PrintRecord(temporary_number="T2026120100000017", unified_number="U202612010000017",
                       entry_number="530120261000123456", pre_entry_number="530100017",
                       status="DECLARED", declared_at=datetime(2026, 12, 1, 2, 15, tzinfo=UTC))
DRAFT = PrintRecord(temporary_number="T2026120100000018", status="SAVED")


def render(tmp_path: Path, document: dict[str, Any], record: PrintRecord = DECLARED,
           name: str = "declaration.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(render_declaration_pdf(document, record, printed_at=PRINTED_AT))
    return path


def poppler(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def page_count(pdf: Path) -> int:
    found = re.search(r"^Pages:\s+(\d+)$", poppler("pdfinfo", str(pdf)), re.MULTILINE)
    assert found, "pdfinfo printed no page count"
    return int(found.group(1))


def text_of(pdf: Path, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    return poppler("pdftotext", "-layout", *pages, str(pdf), "-")


def squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


@dataclass(frozen=True)
class Word:
    text: str
    x_min: float
    y_min: float  # from the top of the page, in points
    x_max: float
    y_max: float


def words_of(pdf: Path, page: int = 1) -> list[Word]:
    out = poppler("pdftotext", "-bbox", "-f", str(page), "-l", str(page), str(pdf), "-")
    return [Word(html.unescape(m.group(5)), *(float(m.group(i)) for i in range(1, 5)))
            for m in re.finditer(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" '
                                 r'yMax="([\d.]+)">([^<]*)</word>', out)]


def word(words: Sequence[Word], text: str) -> Word:
    matching = [w for w in words if w.text == text]
    assert len(matching) == 1, f"{text!r} found {len(matching)} times"
    return matching[0]


def numbers(document: dict[str, Any]) -> list[str]:
    return [c["number"] for c in document["containers"]]


# --- Code 128, from the symbology's table: bar/space widths in modules, index = value -------

PATTERNS = (
    "212222", "222122", "222221", "121223", "121322", "131222", "122213", "122312", "132212",
    "221213", "221312", "231212", "112232", "122132", "122231", "113222", "123122", "123221",
    "223211", "221132", "221231", "213212", "223112", "312131", "311222", "321122", "321221",
    "312212", "322112", "322211", "212123", "212321", "232121", "111323", "131123", "131321",
    "112313", "132113", "132311", "211313", "231113", "231311", "112133", "112331", "132131",
    "113123", "113321", "133121", "313121", "211331", "231131", "213113", "213311", "213131",
    "311123", "311321", "331121", "312113", "312311", "332111", "314111", "221411", "431111",
    "111224", "111422", "121124", "121421", "141122", "141221", "112214", "112412", "122114",
    "122411", "142112", "142211", "241211", "221114", "413111", "241112", "134111", "111242",
    "121142", "121241", "114212", "124112", "124211", "411212", "421112", "421211", "212141",
    "214121", "412121", "111143", "111341", "131141", "114113", "114311", "411113", "411311",
    "113141", "114131", "311141", "411131", "211412", "211214", "211232")
VALUE_OF = {pattern: value for value, pattern in enumerate(PATTERNS)}
START_A, START_B, START_C, STOP_HEAD = 103, 104, 105, "233111"  # stop: 2331112


def runs_of(row: Sequence[int]) -> list[tuple[bool, int]]:
    """(dark?, width in pixels) runs of one pixel row, thresholded halfway."""
    runs: list[tuple[bool, int]] = []
    for value in row:
        dark = value < 128
        if runs and runs[-1][0] == dark:
            runs[-1] = (dark, runs[-1][1] + 1)
        else:
            runs.append((dark, 1))
    return runs


def modules(widths: Sequence[int], total: int) -> str | None:
    """Widths → module counts, scaled per symbol so that print scale does not matter."""
    unit = sum(widths) / total
    counts = [round(width / unit) for width in widths]
    if sum(counts) != total or not all(1 <= c <= 4 for c in counts):
        return None
    return "".join(map(str, counts))


def decode_symbols(runs: Sequence[tuple[bool, int]], start: int) -> list[int] | None:
    """Symbol values from a dark run on, through the checked stop pattern, or None."""
    values: list[int] = []
    position = start
    while position + 6 <= len(runs):
        pattern = modules([w for _dark, w in runs[position:position + 6]], 11)
        if pattern is None:
            return None
        if pattern == STOP_HEAD:
            if position + 7 > len(runs) or not runs[position + 6][0]:
                return None
            last = modules([w for _dark, w in runs[position:position + 7]], 13)
            return values if last == "2331112" else None
        if pattern not in VALUE_OF or (not values and VALUE_OF[pattern] < START_A):
            return None
        values.append(VALUE_OF[pattern])
        position += 6
    return None


def interpret(values: Sequence[int]) -> str | None:
    """Check the mod-103 check symbol and turn code sets A/B/C into text (no FNC or shift:
    a pre-entry number needs none)."""
    if len(values) < 3:
        return None
    *data, check = values
    if (data[0] + sum(i * v for i, v in enumerate(data[1:], start=1))) % 103 != check:
        return None
    code_set = {START_A: "A", START_B: "B", START_C: "C"}[data[0]]
    text = ""
    for value in data[1:]:
        if code_set == "C" and value < 100:
            text += f"{value:02d}"
            continue
        if code_set == "B" and value < 96:
            text += chr(value + 32)
            continue
        if code_set == "A" and value < 96:
            text += chr(value + 32) if value < 64 else chr(value - 64)
            continue
        switch = {"A": {99: "C", 100: "B"}, "B": {99: "C", 101: "A"},
                  "C": {100: "B", 101: "A"}}[code_set]
        if value not in switch:
            return None
        code_set = switch[value]
    return text


def decode_code128(row: Sequence[int]) -> str | None:
    runs = runs_of(row)
    for index, (dark, _width) in enumerate(runs):
        if dark:
            values = decode_symbols(runs, index)
            if values:
                text = interpret(values)
                if text is not None:
                    return text
    return None


def page_image(pdf: Path, tmp_path: Path, page: int = 1) -> Image.Image:
    prefix = tmp_path / f"page{page}"
    subprocess.run(["pdftoppm", "-r", "100", "-png", "-f", str(page), "-l", str(page),
                    "-singlefile", str(pdf), str(prefix)], check=True, timeout=60)
    return Image.open(f"{prefix}.png").convert("L")


def barcode_rows(image: Image.Image) -> list[list[int]]:
    """The pixel rows of the top band (the top 10 % of the page), where the form keeps its
    barcode."""
    width = image.width
    pixels = image.tobytes()  # mode L: one byte per pixel, row after row
    return [list(pixels[y * width:(y + 1) * width]) for y in range(image.height // 10)]


def row_of(values: Sequence[int], module: int = 2) -> list[int]:
    """A pixel row drawn from the table: quiet zone, the symbols, stop, quiet zone."""
    row = [255] * 30
    for pattern in [PATTERNS[v] for v in values] + ["2331112"]:
        for index, width in enumerate(pattern):
            row += [0 if index % 2 == 0 else 255] * (module * int(width))
    return row + [255] * 30


def test_decoder_reads_a_known_symbol_and_refuses_a_wrong_check() -> None:
    """The decoder itself, on rows built by hand: START C, 53 01 00 01, Code B, "7", check.
    Without this the barcode test below could pass with a decoder that accepts anything."""
    values = [START_C, 53, 1, 0, 1, 100, 23]
    check = (values[0] + sum(i * v for i, v in enumerate(values[1:], start=1))) % 103
    assert decode_code128(row_of([*values, check])) == "530100017"
    assert decode_code128(row_of([*values, check], module=3)) == "530100017"
    assert decode_code128(row_of([*values, (check + 1) % 103])) is None
    assert decode_code128(row_of([START_C, 53, 1, 0, 2, 100, 23, check])) is None


# --- the form ------------------------------------------------------------------------------

def test_a_one_container_import_is_one_page_with_title_numbers_and_container(
        tmp_path: Path) -> None:
    document = valid_declaration("import", containers=1)
    pdf = render(tmp_path, document)
    assert pdf.read_bytes().startswith(b"%PDF-")
    assert page_count(pdf) == 1
    text = text_of(pdf)
    assert "中华人民共和国海关进口货物报关单" in text
    assert "预录入编号: 530100017" in text
    assert "海关编号: 530120261000123456" in text
    assert numbers(document)[0] in text
    assert "集装箱附加页" not in text
    assert "深圳市前海星河进出口有限公司" in text
    assert "(5301)" in text  # the customs code printed with its label
    assert "第1页/共1页" in squeezed(text)  # pdftotext drops the spaces around the digits
    assert "申报日期: 2026年12月01日" in text  # 02:15 UTC is 10:15 in Beijing


def test_fonts_are_embedded_subsets(tmp_path: Path) -> None:
    """No unembedded base-14 font sneaks in (reportlab's default Helvetica), so any viewer
    shows the same glyphs."""
    pdf = render(tmp_path, valid_declaration())
    rows = poppler("pdffonts", str(pdf)).splitlines()[2:]
    assert rows
    for row in rows:
        assert re.search(r"\byes\s+yes\s+yes\b", row), row  # embedded, subset, ToUnicode


def test_eight_containers_print_the_first_in_its_box_and_seven_in_the_remarks(
        tmp_path: Path) -> None:
    document = valid_declaration("import", containers=8)
    pdf = render(tmp_path, document)
    assert page_count(pdf) == 1
    words = words_of(pdf)
    box = word(words, "集装箱号")
    remarks = word(words, "标记唛码及备注")
    items = word(words, "项号")
    first, *others = numbers(document)
    in_box = [w for w in words if w.text.startswith(first)]
    assert len(in_box) == 1
    assert in_box[0].x_min >= box.x_min - 1 and box.y_max <= in_box[0].y_min < box.y_max + 12
    assert in_box[0].text == f"{first}(L)"
    for number in others:
        found = [w for w in words if w.text.startswith(number)]
        assert len(found) == 1, number
        assert remarks.y_max <= found[0].y_min and found[0].y_max <= items.y_min, number
    assert "集装箱附加页" not in text_of(pdf)


def test_ten_containers_by_sea_add_the_attachment_page_with_every_container(
        tmp_path: Path) -> None:
    document = valid_declaration("export", containers=10)
    pdf = render(tmp_path, document)
    assert page_count(pdf) == 2
    first_page = text_of(pdf, 1)
    assert "中华人民共和国海关出口货物报关单" in first_page
    assert "COSCO HOPE/012E" in first_page  # waterway: name and voyage as one item
    assert "详见集装箱附加页" in first_page
    all_numbers = numbers(document)
    assert all(number in first_page for number in all_numbers[:8])
    assert not any(number in first_page for number in all_numbers[8:])
    attachment = text_of(pdf, 2)
    assert "集装箱附加页" in attachment
    assert "预录入编号: 530100017" in attachment and "530120261000123456" in attachment
    for position, number in enumerate(all_numbers, start=1):
        assert re.search(rf"^\s*{position}\s+{number}\b", attachment, re.MULTILINE), number
    assert "40英尺及以上" in attachment and "3800" in attachment
    assert "第2页/共2页" in squeezed(attachment)


def test_many_containers_take_as_many_attachment_pages_as_needed(tmp_path: Path) -> None:
    document = valid_declaration("export", containers=60)
    pdf = render(tmp_path, document)
    assert page_count(pdf) == 3
    listed: list[str] = []
    for page in (2, 3):
        text = text_of(pdf, page)
        assert "集装箱附加页" in text and "预录入编号: 530100017" in text
        listed += re.findall(r"^\s*\d+\s+([A-Z]{4}\d{7})\b", text, re.MULTILINE)
    assert listed == numbers(document)


def test_fifty_items_continue_on_follow_up_pages_with_the_table_header(
        tmp_path: Path) -> None:
    document = valid_declaration("import", items=50, containers=0)
    pdf = render(tmp_path, document)
    pages = page_count(pdf)
    assert pages >= 3
    seen: list[int] = []
    for page in range(1, pages + 1):
        text = text_of(pdf, page)
        assert "商品名称及规格型号" in text, page
        assert f"第{page}页/共{pages}页" in squeezed(text)
        seen += [int(m.group(1)) for m in
                 re.finditer(r"^\s*(\d{1,2})\s+\d{10}\b", text, re.MULTILINE)]
    assert seen == list(range(1, 51))  # every item once, in order
    assert "(续页)" in text_of(pdf, 2)


def test_the_barcode_decodes_to_the_pre_entry_number(tmp_path: Path) -> None:
    pdf = render(tmp_path, valid_declaration())
    rows = barcode_rows(page_image(pdf, tmp_path))
    bars = [sum(1 for dark, _w in runs_of(row) if dark) for row in rows]
    assert max(bars) >= 25, "no bars in the barcode band"
    decoded = [text for text in map(decode_code128, rows) if text is not None]
    assert decoded, "no pixel row of the band decodes as Code 128"
    assert set(decoded) == {"530100017"}
    assert len(decoded) >= 20  # the whole bar height reads, not a lucky row


@pytest.mark.parametrize("pre_entry", ["530120261000123456", "E5301X0017"])
def test_longer_and_alphanumeric_pre_entry_numbers_decode_too(tmp_path: Path,
                                                              pre_entry: str) -> None:
    """The QP FAQ's pre-entry number has 9 digits; the data centre's may be the 18-digit form or
    carry a letter, and the barcode must still read (code sets C and B)."""
    record = PrintRecord(pre_entry_number=pre_entry, declared_at=DECLARED.declared_at)
    pdf = render(tmp_path, valid_declaration(), record)
    decoded = {text for text in map(decode_code128, barcode_rows(page_image(pdf, tmp_path)))
               if text is not None}
    assert decoded == {pre_entry}


def test_an_undeclared_document_has_no_barcode_and_says_so(tmp_path: Path) -> None:
    pdf = render(tmp_path, valid_declaration(), DRAFT)
    text = text_of(pdf)
    assert "未申报/尚无预录入编号" in text
    assert "暂存编号: T2026120100000018" in text
    assert "申报日期: (未申报)" in text
    rows = barcode_rows(page_image(pdf, tmp_path))
    assert not any(decode_code128(row) for row in rows)


def test_filing_list_title(tmp_path: Path) -> None:
    assert "中华人民共和国海关出境货物备案清单" in text_of(
        render(tmp_path, valid_filing_list("export")))
    assert "中华人民共和国海关进境货物备案清单" in text_of(
        render(tmp_path, valid_filing_list("import"), name="in.pdf"))


def test_longest_texts_stay_inside_their_boxes(tmp_path: Path) -> None:
    """Every field at its maximum length prints whole (shrunk and wrapped) and stays in its
    box: each line lies below its caption, above the next row's captions, left of the next
    box."""
    document = valid_declaration(
        "export", items=3, containers=8, remarks="唛头" * 127 + "X",
        transport_name="T" * 32, voyage_number="V" * 32)
    header = document["header"]
    header["domestic_party"]["name"] = "深圳" * 50
    header["overseas_party"]["name"] = "LONG NAME " * 10
    header["goods_place"] = "深圳市福田区皇岗口岸海关监管场所" * 6
    document["items"][0]["name"] = "商品" * 50
    document["items"][0]["specification"] = "规格型号|" * 51
    pdf = render(tmp_path, document)
    assert page_count(pdf) == 1
    words = words_of(pdf)

    def inside(fragment: str, caption: str, below: str, right: float = 567.0) -> None:
        top, bottom = word(words, caption), word(words, below)
        found = [w for w in words if fragment in w.text]
        assert found, fragment
        for piece in found:
            assert top.y_max <= piece.y_min and piece.y_max <= bottom.y_min + 0.5, piece
            assert top.x_min - 1 <= piece.x_min and piece.x_max <= right, piece

    inside("唛头唛头", "标记唛码及备注", "项号")
    inside("深圳深圳", "境内发货人", "境外收货人", right=word(words, "出境关别").x_min)
    inside("皇岗口岸", "货物存放地点", "贸易国(地区)")
    inside("TTTT", "运输工具名称及航次号", "生产销售单位", right=word(words, "提运单号").x_min)
    second_item = next(w for w in words if w.text == document["items"][1]["hs_code"])
    for piece in (w for w in words if "商品商品" in w.text or "规格型号|" in w.text):
        assert piece.y_max <= second_item.y_min, piece
    text = text_of(pdf)
    assert "…" not in text  # the boxes are sized so that a valid document loses nothing
    assert header["domestic_party"]["credit_code"] in text  # kept under the long name
    assert "".join(w.text for w in words if "深圳深圳" in w.text) == "深圳" * 50


def test_rendering_is_reproducible() -> None:
    document = valid_declaration(containers=3)
    first = render_declaration_pdf(document, DECLARED, printed_at=PRINTED_AT)
    assert render_declaration_pdf(document, DECLARED, printed_at=PRINTED_AT) == first


def test_write_is_atomic_with_mode_0644(tmp_path: Path) -> None:
    target = tmp_path / "out.pdf"
    target.write_bytes(b"old")
    write_declaration_pdf(target, valid_declaration(), DECLARED, printed_at=PRINTED_AT)
    assert target.read_bytes().startswith(b"%PDF-")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.pdf"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    target = tmp_path / "out.pdf"
    target.write_bytes(b"old")

    def fail(*_args: Any, **_kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("eport.clients.customs.printing.os.fsync", fail)
    with pytest.raises(OSError):
        write_declaration_pdf(target, valid_declaration(), DECLARED, printed_at=PRINTED_AT)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pdf"]


# --- font discovery --------------------------------------------------------------------------

def test_a_missing_font_names_the_package_in_both_languages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(print_layout, "KNOWN_FONT_PATHS", (tmp_path / "none.ttc",))
    with pytest.raises(PrintError) as raised:
        find_font_file({})
    error = raised.value
    assert "apt-get install fonts-wqy-microhei" in error.remedy.zh
    assert "apt-get install fonts-wqy-microhei" in error.remedy.en
    assert "中文字体" in error.message.zh and "CJK font" in error.message.en
    assert "EPORT_CJK_FONT" in error.remedy.en


def test_eport_cjk_font_is_used_and_a_wrong_one_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_font_file({})
    assert find_font_file({"EPORT_CJK_FONT": str(real)}) == real
    with pytest.raises(PrintError):  # a named font that is missing is not silently replaced
        find_font_file({"EPORT_CJK_FONT": str(tmp_path / "nope.ttf")})
    monkeypatch.setenv("EPORT_CJK_FONT", str(tmp_path / "nope.ttf"))
    with pytest.raises(PrintError) as raised:
        render_declaration_pdf(valid_declaration(), DECLARED)
    assert str(tmp_path / "nope.ttf") in raised.value.message.en
    not_a_font = tmp_path / "broken.ttf"
    not_a_font.write_bytes(b"not a font")
    with pytest.raises(PrintError):
        print_layout.register_font(not_a_font)


def test_characters_the_font_lacks_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    document = valid_declaration()
    document["header"]["remarks"] = "\U00020000 ok"  # CJK extension B: not in Micro Hei
    with caplog.at_level("WARNING", logger="eport.clients.customs.printing"):
        render_declaration_pdf(document, DECLARED, printed_at=PRINTED_AT)
    assert "\U00020000" in caplog.text and "empty boxes" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="eport.clients.customs.printing"):
        render_declaration_pdf(valid_declaration(), DECLARED, printed_at=PRINTED_AT)
    assert not caplog.records


# --- text fitting ---------------------------------------------------------------------------

FONT = print_layout.register_font(find_font_file({}))
TEXTS = st.text(alphabet=st.sampled_from(list("报关单集装箱号ABCXYZ0123456789 /-|,.()\n")),
                max_size=300)


@settings(max_examples=150, deadline=None)
@given(text=TEXTS, width=st.floats(20, 300), height=st.floats(4, 120))
def test_fitted_text_never_leaves_its_box(text: str, width: float, height: float) -> None:
    fitted = fit(text, FONT, width, height, 7.5, 4.5)
    for line in fitted.lines:
        assert print_layout.text_width(line, FONT, fitted.size) <= width + 1e-6, line
    assert len(fitted.lines) * fitted.size * LEADING <= max(height, fitted.size * LEADING) + 0.01
    if not fitted.lines[-1].endswith(print_layout.ELLIPSIS):
        # nothing was cut: every character but the breaking spaces and newlines is still there
        assert "".join(fitted.lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")
