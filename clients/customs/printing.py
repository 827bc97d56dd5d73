"""`eport customs print`: the customs declaration (报关单) or filing list (备案清单) as an A4 PDF
in the standard format (标准格式), the only format left once paper forms were abolished (QP FAQ
§八(一)).

Page 1 is the form: title, the pre-entry number with its Code 128 barcode (the barcode exists
only once the document is declared: QP FAQ §八(一)), the header boxes, the first items, the
declaring unit and the declaration date. Items that do not fit continue on follow-up pages with
the table header repeated. More than 8 containers add the container attachment page(s)
(集装箱附加页, QP FAQ §十三(八)2(4)). docs/customs-print.md describes the form.

The layout is computed before anything is drawn, so every page can say "第 N 页 / 共 M 页".
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from eport.clients.customs.print_layout import (
    LEADING,
    MIN_SIZE,
    PAD,
    Cell,
    PrintError,
    barcode,
    draw_cell,
    draw_lines,
    draw_row,
    find_font_file,
    fit,
    missing_glyphs,
    register_font,
    snap,
    wrap,
)
from eport.common.customs.document import container_layout, transport_display
from eport.common.customs.tables import label
from eport.common.text import Bilingual

__all__ = ["PrintError", "PrintRecord", "render_declaration_pdf", "write_declaration_pdf"]

log = logging.getLogger(__name__)

# Customs dates are Beijing dates; China has had no daylight saving time since 1991, so a
# fixed offset is exact and needs no tz database.
CHINA_TIME = timezone(timedelta(hours=8), "CST")


@dataclass(frozen=True)
class PrintRecord:
    """What the data centre knows about the document (not part of the signed document)."""

    temporary_number: str = ""
    unified_number: str = ""
    entry_number: str = ""
    pre_entry_number: str = ""
    status: str = ""
    # aware, or naive UTC (protobuf's Timestamp.ToDatetime() gives naive UTC)
    declared_at: datetime | None = None


# --- page geometry (points) -----------------------------------------------------------------

PAGE_WIDTH: float = A4[0]
PAGE_HEIGHT: float = A4[1]
MARGIN = 28.35  # 10 mm: inside what office laser printers can reach
LEFT = MARGIN
RIGHT = PAGE_WIDTH - MARGIN
WIDTH = RIGHT - LEFT
TOP = PAGE_HEIGHT - MARGIN
CONTENT_BOTTOM = MARGIN + 6
FOOTER_BASELINE = MARGIN - 8

BAR_HEIGHT = 24.0
TITLE_BASELINE = TOP - 52
TOP_LINE_TOP = TOP - 62
GRID_TOP = TOP - 74

ITEM_HEADER_HEIGHT = 20.0
ITEM_SIZE = 7.0
ITEM_MIN_HEIGHT = 26.0
ITEM_MAX_HEIGHT = 72.0
# Party rows hold a 100-character name in three lines at the smallest size, above the codes.
PARTY_ROW_HEIGHT = 38.0
BOTTOM_BLOCK_HEIGHT = 44.0
DATE_LINE_HEIGHT = 14.0
CONTAINER_ROW_HEIGHT = 15.0


@dataclass(frozen=True)
class GridRow:
    height: float
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Form:
    """Every text the pages print, worked out from the document once."""

    title: str
    number_line: tuple[str, str, str]
    barcode_value: str
    no_barcode_text: str
    grid: tuple[GridRow, ...]
    item_captions: tuple[str, ...]
    items: tuple[tuple[str, ...], ...]
    declarant: Cell
    declared_line: str
    printed_line: str
    containers: tuple[tuple[str, str, str], ...]  # the attachment page's rows; empty if none
    transport_line: str


# Items table columns: widths in points (they add up to WIDTH) and alignment. Quantities and
# prices align right, as figures do on the paper form.
ITEM_COLUMNS: tuple[tuple[float, str], ...] = (
    (24, "center"), (54, "left"), (150, "left"), (70, "right"), (70, "right"),
    (52, "left"), (52, "left"), (WIDTH - 502, "left"), (30, "left"))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _coded(table: str, code: Any) -> str:
    """A code with its Chinese label, as the standard form prints it: "(0110)一般贸易"."""
    text = _text(code)
    if not text:
        return ""
    name = label(table, text)
    return f"({text}){name}" if name else text


def _party(caption: str, party: Any, weight: float) -> Cell:
    """A party's box: the name, and its codes on the last line (credit code, customs code,
    AEO code), kept whole even when a 100-character name has to shrink."""
    if not isinstance(party, Mapping):
        return Cell(caption, _text(party), weight)
    codes = [_text(party.get("credit_code")), _text(party.get("customs_code"))]
    aeo = _text(party.get("aeo_code"))
    codes.append(f"AEO: {aeo}" if aeo else "")
    return Cell(caption, _text(party.get("name")), weight,
                footer=" ".join(code for code in codes if code))


_FEE_MARKS = {"1": "率", "2": "单价", "3": "总价"}


def _fee(fee: Any) -> str:
    """Freight, insurance, other charges as currency/amount/mark, the customs convention."""
    if not isinstance(fee, Mapping):
        return _text(fee)
    mark = _text(fee.get("mark"))
    parts = [part for part in (_text(fee.get("currency")), _text(fee.get("amount")), mark)
             if part]
    if not parts:
        return ""
    meaning = _FEE_MARKS.get(mark, "")
    return "/".join(parts) + (f"({meaning})" if meaning else "")


def _container_number(container: Any) -> str:
    if not isinstance(container, Mapping):
        return _text(container)
    size = _text(container.get("size"))
    return _text(container.get("number")) + (f"({size})" if size else "")


def _beijing(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA_TIME)


def _quantity(amount: Any, unit: Any) -> str:
    text = _text(amount)
    if not text:
        return ""
    code = _text(unit)
    return text + (label("unit", code) or code)


def _item_cells(item: Mapping[str, Any]) -> tuple[str, ...]:
    number = _text(item.get("item_number"))
    record_item = _text(item.get("record_item_number"))
    if record_item:
        number += f"\n({record_item})"
    name_spec = "\n".join(part for part in (_text(item.get("name")),
                                            _text(item.get("specification"))) if part)
    # the standard form lists the legal quantities first, then the transaction quantity
    quantities = [_quantity(item.get("legal_quantity"), item.get("legal_unit")),
                  _quantity(item.get("second_quantity"), item.get("second_unit")),
                  _quantity(item.get("quantity"), item.get("unit"))]
    currency = _text(item.get("currency"))
    prices = [_text(item.get("unit_price")), _text(item.get("total_price")),
              label("currency", currency) or currency]
    return (number, _text(item.get("hs_code")), name_spec,
            "\n".join(q for q in quantities if q), "\n".join(p for p in prices if p),
            _coded("country", item.get("origin_country")),
            _coded("country", item.get("destination_country")),
            _text(item.get("domestic_region")),
            _coded("duty_mode", item.get("duty_mode")))


def _remarks(header: Mapping[str, Any], more: Sequence[Any], total_containers: int,
             attachment: bool) -> str:
    lines = [_text(header.get("remarks"))]
    related = _text(header.get("related_entry_number"))
    if related:
        lines.append(f"关联报关单: {related}")
    related_record = _text(header.get("related_record_number"))
    if related_record:
        lines.append(f"关联备案: {related_record}")
    if more:
        lines.append("集装箱: " + " ".join(_container_number(c) for c in more))
    if attachment:
        lines.append(f"集装箱共 {total_containers} 个, 详见集装箱附加页")
    return "\n".join(line for line in lines if line)


def _attached(documents: Any) -> str:
    if not isinstance(documents, Sequence):
        return ""
    entries = []
    for entry in documents:
        if isinstance(entry, Mapping):
            code = _text(entry.get("code"))
            name = label("document_code", code)
            entries.append(f"{code}{'(' + name + ')' if name else ''}: "
                           f"{_text(entry.get('number'))}")
    return "; ".join(entries)


def _title(document: Mapping[str, Any]) -> str:
    exporting = document.get("direction") == "export"
    if document.get("document_type") == "filing-list":
        return "中华人民共和国海关" + ("出境" if exporting else "进境") + "货物备案清单"
    return "中华人民共和国海关" + ("出口" if exporting else "进口") + "货物报关单"


def _sequence(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def _build_form(document: Mapping[str, Any], record: PrintRecord,
                printed_at: datetime) -> Form:
    if not isinstance(document, Mapping):
        raise PrintError(
            Bilingual("报关单数据不是 JSON 对象, 无法打印",
                      "The declaration is not a JSON object and cannot be printed"),
            Bilingual("请检查文件格式 (docs/customs-document.md)",
                      "check the file's format (docs/customs-document.md)"))
    header_value = document.get("header")
    header: Mapping[str, Any] = header_value if isinstance(header_value, Mapping) else {}
    exporting = document.get("direction") == "export"
    containers = _sequence(document.get("containers"))
    first, more, attachment = container_layout(containers)

    def word(imported: str, exported: str) -> str:
        return exported if exporting else imported

    declared = _beijing(record.declared_at) if record.declared_at else None
    grid = (
        GridRow(PARTY_ROW_HEIGHT, (
            _party(word("境内收货人", "境内发货人"), header.get("domestic_party"), 0.32),
            Cell(word("进境关别", "出境关别"), _coded("customs", header.get("ie_port")), 0.15),
            Cell(word("进口日期", "出口日期"), _text(header.get("ie_date")), 0.12),
            Cell("申报日期", declared.strftime("%Y%m%d") if declared else "", 0.12),
            Cell("备案号", _text(header.get("record_number")), 0.14),
            Cell("申报地海关", _coded("customs", header.get("declaration_customs")), 0.15))),
        GridRow(PARTY_ROW_HEIGHT, (
            _party(word("境外发货人", "境外收货人"), header.get("overseas_party"), 0.32),
            Cell("运输方式", _coded("transport_mode", header.get("transport_mode")), 0.15),
            Cell("运输工具名称及航次号", transport_display(header), 0.24),
            Cell("提运单号", _text(header.get("bill_of_lading")), 0.15),
            Cell("合同协议号", _text(header.get("contract_number")), 0.14))),
        GridRow(PARTY_ROW_HEIGHT, (
            _party(word("消费使用单位", "生产销售单位"), header.get("owner"), 0.32),
            Cell("监管方式", _coded("trade_mode", header.get("trade_mode")), 0.15),
            Cell("征免性质", _coded("levy_kind", header.get("levy_kind")), 0.12),
            Cell("许可证号", _text(header.get("licence_number")), 0.14),
            Cell("货物存放地点", _text(header.get("goods_place")), 0.27))),
        GridRow(26, (
            Cell("贸易国(地区)", _coded("country", header.get("trade_country")), 0.14),
            Cell(word("启运国(地区)", "运抵国(地区)"),
                 _coded("country", header.get("departure_country")), 0.14),
            Cell(word("经停港", "指运港"), _text(header.get("transit_port")), 0.13),
            Cell("成交方式", _coded("transaction_mode", header.get("transaction_mode")), 0.11),
            Cell("运费", _fee(header.get("freight")), 0.16),
            Cell("保费", _fee(header.get("insurance")), 0.16),
            Cell("杂费", _fee(header.get("other_charges")), 0.16))),
        GridRow(26, (
            Cell("件数", _text(header.get("packages")), 0.09),
            Cell("包装种类", _coded("package_type", header.get("package_type")), 0.15),
            Cell("毛重(千克)", _text(header.get("gross_weight")), 0.12),
            Cell("净重(千克)", _text(header.get("net_weight")), 0.12),
            Cell("报关单类型", _coded("entry_type", header.get("entry_type")), 0.14),
            Cell("集装箱号", _container_number(first) if first else "", 0.38))),
        GridRow(22, (Cell("随附单证及编号",
                          _attached(document.get("attached_documents")), 1.0),)),
        GridRow(66, (Cell("标记唛码及备注",
                          _remarks(header, more, len(containers), bool(attachment)), 1.0),)),
    )

    pre_entry = record.pre_entry_number.strip()
    if pre_entry:
        first_number = f"预录入编号: {pre_entry}"
        known = ""
    else:
        first_number = "预录入编号: 未申报/尚无预录入编号"
        known = (f"统一编号: {record.unified_number}" if record.unified_number
                 else f"暂存编号: {record.temporary_number}" if record.temporary_number else "")
    # Code 128 carries ASCII only; anything else is printed as text and not as a barcode
    printable = pre_entry.isascii() and pre_entry.isprintable()

    items = tuple(_item_cells(item) for item in _sequence(document.get("items"))
                  if isinstance(item, Mapping))
    attachment_rows = tuple(
        (_text(c.get("number")), _coded("container_size", c.get("size")),
         _text(c.get("tare_weight"))) if isinstance(c, Mapping) else (_text(c), "", "")
        for c in attachment)
    return Form(
        title=_title(document),
        number_line=(first_number, f"海关编号: {record.entry_number}", known),
        barcode_value=pre_entry if printable else "",
        no_barcode_text="" if pre_entry else "未申报/尚无预录入编号 (条形码在申报后生成)",
        grid=grid,
        # explicit breaks: the narrow columns would otherwise split "(地区)" or "目的地"
        item_captions=("项号", "商品编号", "商品名称及规格型号", "数量及单位", "单价/总价/币制",
                       "原产国\n(地区)", "最终目的国\n(地区)",
                       word("境内\n目的地", "境内\n货源地"), "征免"),
        items=items,
        declarant=_party("申报单位", header.get("declaring_agent"), 0.40),
        declared_line=("申报日期: " + declared.strftime("%Y年%m月%d日")) if declared else
        "申报日期: (未申报)",
        printed_line="打印时间: " + _beijing(printed_at).strftime("%Y-%m-%d %H:%M"),
        containers=attachment_rows,
        transport_line=(f"运输工具名称及航次号: {transport_display(header)}    "
                        f"提运单号: {_text(header.get('bill_of_lading'))}"),
    )


# --- pagination -----------------------------------------------------------------------------

# A page is drawn by (canvas, font name, page number, page count).
DrawPage = Callable[[Canvas, str, int, int], None]


def _item_height(cells: Sequence[str], font: str) -> float:
    """The height that shows the item at the table's normal size, within the row limits (a
    255-character specification then shrinks rather than eating the page)."""
    needed = ITEM_MIN_HEIGHT
    for text, (width, _align) in zip(cells, ITEM_COLUMNS, strict=True):
        lines = wrap(text, font, ITEM_SIZE, width - 2 * PAD) if text else []
        needed = max(needed, len(lines) * ITEM_SIZE * LEADING + 2 * PAD)
    return min(needed, ITEM_MAX_HEIGHT)


def _grid_bottom(form: Form) -> float:
    return GRID_TOP - sum(row.height for row in form.grid)


def _first_page_item_room(form: Form) -> tuple[float, float]:
    top = _grid_bottom(form) - ITEM_HEADER_HEIGHT
    bottom = CONTENT_BOTTOM + DATE_LINE_HEIGHT + BOTTOM_BLOCK_HEIGHT
    return top, bottom


def _split_items(heights: Sequence[float], first_room: float, later_room: float
                 ) -> list[list[int]]:
    pages: list[list[int]] = [[]]
    room = first_room
    for index, height in enumerate(heights):
        if height > room and pages[-1]:
            pages.append([])
            room = later_room
        pages[-1].append(index)
        room -= height
    return pages


def _plan(form: Form, font: str) -> list[DrawPage]:
    heights = [_item_height(cells, font) for cells in form.items]
    first_top, first_bottom = _first_page_item_room(form)
    later_top = GRID_TOP - ITEM_HEADER_HEIGHT
    item_pages = _split_items(heights, first_top - first_bottom, later_top - CONTENT_BOTTOM)
    pages: list[DrawPage] = []
    for number, indexes in enumerate(item_pages):
        rows = [(form.items[i], heights[i]) for i in indexes]
        pages.append(_first_page(form, rows) if number == 0 else _items_page(form, rows))
    per_page = int((GRID_TOP - 30 - CONTAINER_ROW_HEIGHT - CONTENT_BOTTOM)
                   // CONTAINER_ROW_HEIGHT)
    for start in range(0, len(form.containers), per_page):
        pages.append(_container_page(form, start, form.containers[start:start + per_page]))
    return pages


# --- drawing --------------------------------------------------------------------------------

def _bold_text(canvas: Canvas, font: str, size: float, x: float, y: float, text: str) -> None:
    """Centred text drawn filled and stroked: the face has no bold weight, and a thin outline
    gives titles the weight they have on the official form."""
    text_object = canvas.beginText()
    text_object.setTextRenderMode(2)
    text_object.setFont(font, size)
    width = canvas.stringWidth(text, font, size)
    text_object.setTextOrigin(x - width / 2, y)
    text_object.textOut(text)
    canvas.setLineWidth(0.35)
    canvas.drawText(text_object)
    canvas.setLineWidth(0.6)


def _one_line(canvas: Canvas, font: str, text: str, x: float, top: float, width: float,
              size: float, align: str = "left") -> None:
    fitted = fit(text, font, width, size * LEADING, size, MIN_SIZE)
    draw_lines(canvas, fitted, font, x, top, width, align)


def _page_head(canvas: Canvas, font: str, form: Form, title: str) -> None:
    """Barcode band, title and the number line: the same on every page, so that a loose sheet
    still says which declaration it belongs to."""
    if form.barcode_value:
        code = barcode(form.barcode_value, BAR_HEIGHT, WIDTH / 2)
        x = snap(RIGHT - code.width)
        code.drawing.drawOn(canvas, x, TOP - BAR_HEIGHT)
        canvas.setFont(font, 7.5)
        canvas.drawCentredString(x + code.width / 2, TOP - BAR_HEIGHT - 8, form.barcode_value)
    elif form.no_barcode_text:
        width = WIDTH * 0.34
        canvas.saveState()
        canvas.setDash(2, 2)
        canvas.setStrokeGray(0.5)
        canvas.rect(RIGHT - width, TOP - BAR_HEIGHT, width, BAR_HEIGHT, stroke=1, fill=0)
        canvas.restoreState()
        _one_line(canvas, font, form.no_barcode_text, RIGHT - width + 4,
                  TOP - BAR_HEIGHT / 2 + 4, width - 8, 7.5, "center")
    _bold_text(canvas, font, 15, PAGE_WIDTH / 2, TITLE_BASELINE, title)
    first, entry, known = form.number_line
    _one_line(canvas, font, first, LEFT, TOP_LINE_TOP, WIDTH * 0.40, 8.5)
    _one_line(canvas, font, entry, LEFT + WIDTH * 0.40, TOP_LINE_TOP, WIDTH * 0.32, 8.5)
    if known:
        _one_line(canvas, font, known, LEFT + WIDTH * 0.72, TOP_LINE_TOP, WIDTH * 0.28, 8.5,
                  "right")


def _footer(canvas: Canvas, font: str, form: Form, number: int, total: int) -> None:
    canvas.setFont(font, 8)
    canvas.drawCentredString(PAGE_WIDTH / 2, FOOTER_BASELINE, f"第 {number} 页 / 共 {total} 页")
    canvas.setFont(font, 6.5)
    canvas.drawRightString(RIGHT, FOOTER_BASELINE, form.printed_line)


def _items_table(canvas: Canvas, font: str, form: Form,
                 rows: Sequence[tuple[tuple[str, ...], float]], top: float,
                 bottom: float) -> None:
    header = tuple(Cell("", caption, width, "center")
                   for caption, (width, _align) in zip(form.item_captions, ITEM_COLUMNS,
                                                       strict=True))
    draw_row(canvas, font, header, LEFT, top, WIDTH, ITEM_HEADER_HEIGHT, value_size=7)
    y = top - ITEM_HEADER_HEIGHT
    for cells, height in rows:
        x = LEFT
        for text, (width, align) in zip(cells, ITEM_COLUMNS, strict=True):
            draw_cell(canvas, font, Cell("", text, 1.0, align), x, y, width, height,
                      value_size=ITEM_SIZE)
            x += width
        y -= height
    # the empty rest of the table keeps its column rules, as on the printed form
    if y > bottom:
        canvas.rect(LEFT, bottom, WIDTH, y - bottom, stroke=1, fill=0)
        x = LEFT
        for width, _align in ITEM_COLUMNS[:-1]:
            x += width
            canvas.line(x, y, x, bottom)


def _first_page(form: Form, rows: list[tuple[tuple[str, ...], float]]
                ) -> DrawPage:
    def draw(canvas: Canvas, font: str, number: int, total: int) -> None:
        _page_head(canvas, font, form, form.title)
        y = GRID_TOP
        for row in form.grid:
            draw_row(canvas, font, row.cells, LEFT, y, WIDTH, row.height)
            y -= row.height
        items_bottom = CONTENT_BOTTOM + DATE_LINE_HEIGHT + BOTTOM_BLOCK_HEIGHT
        _items_table(canvas, font, form, rows, y, items_bottom)
        block_top = items_bottom
        draw_row(canvas, font, (
            form.declarant,
            Cell("兹申明对以上内容承担如实申报、依法纳税之法律责任", "\n\n申报单位(签章)", 0.30,
                 "right"),
            Cell("海关批注及签章", "", 0.30)), LEFT, block_top, WIDTH, BOTTOM_BLOCK_HEIGHT)
        line_top = block_top - BOTTOM_BLOCK_HEIGHT - 3
        _one_line(canvas, font, form.declared_line, LEFT, line_top, WIDTH / 2, 8)
        _footer(canvas, font, form, number, total)
    return draw


def _items_page(form: Form, rows: list[tuple[tuple[str, ...], float]]
                ) -> DrawPage:
    def draw(canvas: Canvas, font: str, number: int, total: int) -> None:
        _page_head(canvas, font, form, form.title + "(续页)")
        _items_table(canvas, font, form, rows, GRID_TOP, CONTENT_BOTTOM)
        _footer(canvas, font, form, number, total)
    return draw


def _container_page(form: Form, start: int, rows: Sequence[tuple[str, str, str]]
                    ) -> DrawPage:
    columns = ((0.10, "center"), (0.40, "left"), (0.25, "left"), (0.25, "right"))

    def draw(canvas: Canvas, font: str, number: int, total: int) -> None:
        _page_head(canvas, font, form, "集装箱附加页")
        _one_line(canvas, font, f"({form.title})    {form.transport_line}", LEFT, GRID_TOP,
                  WIDTH, 8)
        y = GRID_TOP - 30
        captions = ("序号", "集装箱号", "集装箱规格", "集装箱自重(千克)")
        draw_row(canvas, font, tuple(Cell("", caption, weight, "center")
                                     for caption, (weight, _a) in zip(captions, columns,
                                                                      strict=True)),
                 LEFT, y, WIDTH, CONTAINER_ROW_HEIGHT, value_size=7.5)
        y -= CONTAINER_ROW_HEIGHT
        for offset, (container, size, tare) in enumerate(rows):
            values = (str(start + offset + 1), container, size, tare)
            draw_row(canvas, font, tuple(Cell("", value, weight, align)
                                         for value, (weight, align) in zip(values, columns,
                                                                           strict=True)),
                     LEFT, y, WIDTH, CONTAINER_ROW_HEIGHT, value_size=8)
            y -= CONTAINER_ROW_HEIGHT
        _footer(canvas, font, form, number, total)
    return draw


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for entry in value.values():
            yield from _strings(entry)
    elif isinstance(value, Sequence):
        for entry in value:
            yield from _strings(entry)


# --- entry points ---------------------------------------------------------------------------

def render_declaration_pdf(document: Mapping[str, Any], record: PrintRecord, *,
                           printed_at: datetime | None = None) -> bytes:
    """The declaration as an A4 portrait PDF (bytes). Raises PrintError when it cannot be
    printed (no CJK font, a document that is not an object)."""
    font = register_font(find_font_file())
    form = _build_form(document, record, printed_at or datetime.now(UTC))
    missing = missing_glyphs(font, _strings(document))
    if missing:
        # still printed: the rest of the form is right, and the user can correct by hand
        log.warning("the font has no glyph for %s; these characters print as empty boxes",
                    missing)
    pages = _plan(form, font)
    sink = io.BytesIO()
    # invariant: no creation time or random id in the file, so the same document and record
    # print to the same bytes (the print time is on the page itself)
    canvas = Canvas(sink, pagesize=A4, invariant=True, initialFontName=font,
                    initialFontSize=8)
    canvas.setTitle(form.title + (f" {record.pre_entry_number}" if record.pre_entry_number
                                  else ""))
    canvas.setCreator("eport-middleware (eport customs print)")
    canvas.setLineWidth(0.6)
    for number, draw in enumerate(pages, start=1):
        canvas.setLineWidth(0.6)
        draw(canvas, font, number, len(pages))
        canvas.showPage()
    canvas.save()
    return sink.getvalue()


def write_declaration_pdf(path: Path, document: Mapping[str, Any], record: PrintRecord, *,
                          printed_at: datetime | None = None) -> None:
    """Render, then write whole or not at all (a temp file beside it, then rename), mode 0644:
    a half-written PDF would print a truncated declaration without anyone noticing."""
    data = render_declaration_pdf(document, record, printed_at=printed_at)
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
