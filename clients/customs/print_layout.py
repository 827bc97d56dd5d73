"""Drawing primitives for the printed declaration: the CJK font, text that fits its box, ruled
boxes with captions, and the Code 128 barcode. `printing.py` decides what goes where.

Everything here works in PDF points (1/72 inch) with the origin at the bottom left, as
reportlab's canvas does.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from reportlab.graphics.barcode.code128 import Code128
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from eport.common.failure import EportFailure
from eport.common.text import Bilingual

FONT_ENV = "EPORT_CJK_FONT"
# Where the distributions put WenQuanYi Micro Hei (Debian/Ubuntu first: that is what
# scripts/setup.sh installs). It covers GB 18030's common characters and Latin, so one face
# serves the whole form and pdftotext gets the text back.
KNOWN_FONT_PATHS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/wqy-microhei/wqy-microhei.ttc"),
    Path("/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc"),
    Path("/usr/local/share/fonts/wqy-microhei.ttc"),
)
# A face without these would print the captions as empty boxes.
_REQUIRED_GLYPHS = "中华人民共和国海关进出口货物报关单备案清单集装箱号（）：…"

LEADING = 1.2
ELLIPSIS = "…"


class PrintError(EportFailure):
    """Printing is impossible as asked; one sentence each in Chinese and English, with a remedy."""

    code = "PRINT_FAILED"

    def __init__(self, message: Bilingual, remedy: Bilingual) -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(f"{message.en} / {message.zh}")


def _font_missing(looked_at: Sequence[Path]) -> PrintError:
    listed = ", ".join(str(path) for path in looked_at)
    return PrintError(
        Bilingual(f"找不到中文字体 (文泉驿微米黑), 无法打印报关单。已查找: {listed}",
                  "No CJK font (WenQuanYi Micro Hei) found, so the declaration cannot be "
                  f"printed. Looked at: {listed}"),
        Bilingual(f"请安装字体: sudo apt-get install fonts-wqy-microhei; 或用环境变量 {FONT_ENV} "
                  "指定一个中文 TrueType 字体文件 (.ttf/.ttc)",
                  "install the font: sudo apt-get install fonts-wqy-microhei; or point "
                  f"{FONT_ENV} at a CJK TrueType font file (.ttf/.ttc)"))


def find_font_file(environ: dict[str, str] | None = None) -> Path:
    """The CJK font to print with: $EPORT_CJK_FONT when set (and then only that file: a user
    who names a font wants that one, not a silent substitute), else the first known path."""
    env = os.environ if environ is None else environ
    chosen = env.get(FONT_ENV, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise _font_missing([path])
        return path
    for path in KNOWN_FONT_PATHS:
        if path.is_file():
            return path
    raise _font_missing(KNOWN_FONT_PATHS)


@lru_cache(maxsize=4)
def register_font(path: Path) -> str:
    """Register the face with reportlab once per file and return its font name.

    reportlab embeds TrueType faces as subsets (only the glyphs used) with a ToUnicode map, so
    every viewer shows the same text and text extraction works. A .ttc holds several faces;
    index 0 is the regular one of wqy-microhei.
    """
    name = "EportCJK-" + hashlib.sha1(str(path).encode()).hexdigest()[:8]
    try:
        font = TTFont(name, str(path), subfontIndex=0)
    except Exception as problem:  # reportlab raises TTFError and plain errors alike
        raise PrintError(
            Bilingual(f"字体文件无法使用: {path} ({problem})",
                      f"The font file cannot be used: {path} ({problem})"),
            Bilingual(f"请安装字体: sudo apt-get install fonts-wqy-microhei, 或检查 {FONT_ENV} "
                      "指向的文件",
                      "install the font: sudo apt-get install fonts-wqy-microhei, or check the "
                      f"file {FONT_ENV} names")) from None
    missing = [char for char in _REQUIRED_GLYPHS if ord(char) not in font.face.charToGlyph]
    if missing:
        raise PrintError(
            Bilingual(f"字体 {path} 不含中文字符 ({''.join(missing)}), 打印出来会是方框",
                      f"The font {path} has no Chinese glyphs ({''.join(missing)}); they would "
                      "print as boxes"),
            Bilingual("请安装 fonts-wqy-microhei (sudo apt-get install fonts-wqy-microhei), "
                      f"或让 {FONT_ENV} 指向中文字体",
                      "install fonts-wqy-microhei (sudo apt-get install fonts-wqy-microhei) or "
                      f"point {FONT_ENV} at a CJK font"))
    pdfmetrics.registerFont(font)
    return name


def missing_glyphs(font: str, texts: Iterable[str]) -> str:
    """The characters of `texts` the face cannot draw (each once, in order): they would print
    as empty boxes. Rare characters of company names (CJK extension B) are the usual case."""
    cmap = pdfmetrics.getFont(font).face.charToGlyph
    missing: dict[str, None] = {}
    for text in texts:
        for char in text:
            if not char.isspace() and ord(char) not in cmap:
                missing[char] = None
    return "".join(missing)


# --- text that fits -------------------------------------------------------------------------

# A Latin "word" (code, number, English name) stays whole where possible; each CJK character
# is its own token, since Chinese breaks between any two characters.
_TOKENS = re.compile(r"\s+|[^\s\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\uff00-\uffef]+|.")


def text_width(text: str, font: str, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font, size))


def _split_long(token: str, font: str, size: float, width: float) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in token:
        if current and text_width(current + char, font, size) > width:
            pieces.append(current)
            current = char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def wrap(text: str, font: str, size: float, width: float) -> list[str]:
    """Greedy line breaking; newlines in `text` start new lines."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for token in _TOKENS.findall(paragraph):
            if text_width(current + token, font, size) <= width:
                current += token
                continue
            if token.isspace():
                lines.append(current.rstrip())
                current = ""
                continue
            if current.strip():
                lines.append(current.rstrip())
            current = ""
            if text_width(token, font, size) <= width:
                current = token
            else:
                *whole, current = _split_long(token, font, size, width)
                lines.extend(whole)
        lines.append(current.rstrip())
    return lines


def lines_height(count: int, size: float) -> float:
    return count * size * LEADING


@dataclass(frozen=True)
class Fitted:
    size: float
    lines: list[str]


def fit(text: str, font: str, width: float, height: float, max_size: float,
        min_size: float) -> Fitted:
    """The largest size (in 0.25 pt steps) at which the wrapped text fits width × height; below
    `min_size` print would be unreadable, so there the text is cut with an ellipsis instead.
    Either way nothing leaves the box."""
    size = max_size
    while True:
        lines = wrap(text, font, size, width)
        if lines_height(len(lines), size) <= height + 0.01 or size <= min_size:
            break
        size = max(min_size, size - 0.25)
    if lines_height(len(lines), size) <= height + 0.01:
        return Fitted(size, lines)
    room = int(height // (size * LEADING))
    if room < 1:  # a box lower than one line at min_size: one smaller line rather than none
        size = max(height / LEADING, 1.0)
        lines = wrap(text, font, size, width)
        room = 1
    kept = lines[:room]
    last = kept[-1]
    while last and text_width(last + ELLIPSIS, font, size) > width:
        last = last[:-1]
    kept[-1] = last + ELLIPSIS
    return Fitted(size, kept)


def draw_lines(canvas: Any, fitted: Fitted, font: str, x: float, top: float, width: float,
               align: str = "left") -> None:
    """Draw fitted lines downward from `top` (the first line's ascender touches it)."""
    ascent = fitted.size * 0.77  # wqy-microhei's ascender is 0.765 em
    canvas.setFont(font, fitted.size)
    for index, line in enumerate(fitted.lines):
        baseline = top - ascent - index * fitted.size * LEADING
        if align == "center":
            canvas.drawCentredString(x + width / 2, baseline, line)
        elif align == "right":
            canvas.drawRightString(x + width, baseline, line)
        else:
            canvas.drawString(x, baseline, line)


# --- ruled boxes ----------------------------------------------------------------------------

PAD = 1.8
CAPTION_SIZE = 6.2
VALUE_SIZE = 7.5
MIN_SIZE = 4.5


@dataclass(frozen=True)
class Cell:
    """One box of the form: its caption above and its value below, both fitted to the box."""

    caption: str
    value: str
    weight: float = 1.0  # share of the row's width
    align: str = "left"
    # one line kept at the bottom whatever the value's length: a party's codes must not be
    # the part of a long name that gets cut
    footer: str = ""


def draw_cell(canvas: Any, font: str, cell: Cell, x: float, top: float, width: float,
              height: float, value_size: float = VALUE_SIZE) -> None:
    canvas.rect(x, top - height, width, height, stroke=1, fill=0)
    inner = width - 2 * PAD
    cursor = top - PAD
    if cell.caption:
        caption = fit(cell.caption, font, inner, CAPTION_SIZE * LEADING, CAPTION_SIZE, 4.0)
        canvas.setFillGray(0.3)  # captions grey, so the filled-in values stand out
        draw_lines(canvas, caption, font, x + PAD, cursor, inner)
        canvas.setFillGray(0)
        cursor -= lines_height(len(caption.lines), caption.size) + 0.6
    bottom = top - height + PAD
    if cell.footer:
        footer = fit(cell.footer, font, inner, value_size * LEADING, value_size, MIN_SIZE)
        footer_height = lines_height(1, footer.size)
        draw_lines(canvas, footer, font, x + PAD, bottom + footer_height, inner, cell.align)
        bottom += footer_height
    room = cursor - bottom
    if cell.value and room > 0:
        value = fit(cell.value, font, inner, room, value_size, MIN_SIZE)
        draw_lines(canvas, value, font, x + PAD, cursor, inner, cell.align)


def draw_row(canvas: Any, font: str, cells: Sequence[Cell], left: float, top: float,
             width: float, height: float, value_size: float = VALUE_SIZE) -> None:
    total = sum(cell.weight for cell in cells)
    x = left
    for index, cell in enumerate(cells):
        # the last cell takes what rounding left, so the row closes exactly at the margin
        cell_width = left + width - x if index == len(cells) - 1 else width * cell.weight / total
        draw_cell(canvas, font, cell, x, top, cell_width, height, value_size)
        x += cell_width


# --- barcode --------------------------------------------------------------------------------

# 0.02 inch (1.44 pt, 0.508 mm) per module: a common X-dimension for laser-printed Code 128 and
# a whole number of dots at 100, 300 and 600 dpi, so bars print without ragged edges (QP FAQ
# §八(二): customs scans the printed barcode).
MODULE = 1.44
QUIET_MODULES = 10


@dataclass(frozen=True)
class Barcode:
    value: str
    module: float
    height: float

    @property
    def drawing(self) -> Any:
        return Code128(self.value, barWidth=self.module, barHeight=self.height, quiet=False,
                       humanReadable=False)

    @property
    def width(self) -> float:
        return float(self.drawing.width)


def barcode(value: str, height: float, max_width: float) -> Barcode:
    """Code 128 of `value`, narrowed (0.005 in at a time, down to 0.01 in) only if a long
    value would not fit; a 9- or 18-digit pre-entry number always gets the full module."""
    module = MODULE
    while module > 0.72 and Code128(value, barWidth=module, quiet=False).width > max_width:
        module -= 0.36
    return Barcode(value, module, height)


def snap(value: float) -> float:
    """Round down to 0.01 inch, the printer-dot grid the barcode's modules are sized for."""
    return int(value / 0.72) * 0.72
