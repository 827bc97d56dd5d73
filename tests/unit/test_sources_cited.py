"""Citations name a source of docs/sources.md by its short name, never a file outside the
repository or an issue number: a reader of the repository alone can follow every one."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SOURCES = REPOSITORY / "docs" / "sources.md"
CHECKED_SUFFIXES = (".py", ".md", ".sh", ".service", ".rules", ".toml", ".proto", ".sql", ".json")
# docs/sources.md explains the rule and this test spells out what it forbids.
EXEMPT = {"docs/sources.md", "tests/unit/test_sources_cited.py"}

FORBIDDEN = {
    "a path outside the repository": re.compile(r"shared/|seeds/|\bDESIGN(?:\.md)?\b"),
    "a source document by its seed number": re.compile(r"\bseeds? ?0\d\d\b", re.IGNORECASE),
    "an issue number": re.compile(r"\bissues? #?\d+", re.IGNORECASE),
}
# Words that may stand right before a bare "§" whose source the sentence already names
# ("the §2.4 messages", "as §6 names", "(§4 1.1)").
BARE_REFERENCE_WORDS = {"the", "of", "as", "in", "by", "see", "with", "and", "or", "at", "from",
                        "under", "per", "one", "its", "their", "his", "her", "to", "also"}

COMMENT_MARK = re.compile(r"^\s*(?:#|//|--|\*)?[\s\-]*[\"']?")
QUOTES = re.compile(r"\s*[\"']\s+[\"']\s*|\s*[\"']\s*$")


def repository_files() -> list[Path]:
    """The files git knows (tracked or new, not ignored), so that caches and the venv stay out."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.splitlines()
    return [REPOSITORY / name for name in sorted(set(listed))
            if name.endswith(CHECKED_SUFFIXES) and name not in EXEMPT
            and (REPOSITORY / name).is_file()]


def short_names() -> set[str]:
    """The short names docs/sources.md defines: the headings of its entries."""
    text = SOURCES.read_text(encoding="utf-8")
    return {match.strip().lower() for match in re.findall(r"^### (.+)$", text, re.MULTILINE)}


def unknown_section_citations(line: str, names: set[str], previous_line: str = "") -> list[str]:
    """The words before each "§" of `line` that are neither a short name nor a bare reference.
    A citation wrapped at the "§" ("bonded" / "manual §2.4") is read with the previous line."""
    unknown = []
    for match in re.finditer("§", line):
        # Adjacent string literals ("… (e-book " "manual §4)") read as one text.
        before = QUOTES.sub(" ", COMMENT_MARK.sub("", line[:match.start()])).rstrip().lower()
        if not before:
            continue  # "§4 1.2: ..." opening a line: the sentence before names the source
        if " " not in before.strip():
            before = f"{QUOTES.sub(' ', previous_line).strip().lower()} {before.strip()}"
        if any(before.endswith(name) for name in names):
            continue
        words = re.findall(r"[\w/.\-]+$", before)
        if not words or words[0] in BARE_REFERENCE_WORDS:
            continue  # "(§4 1.1)", ", §2.4", "the §2.4 messages": the sentence names the source
        unknown.append(before.strip()[-40:])
    return unknown


def test_sources_defines_the_documents_and_the_public_facts() -> None:
    names = short_names()
    for expected in ("bonded manual", "e-book manual", "qp faq", "400 faqs", "clearance book",
                     "page library", "202205 message spec", "202205 crypto guide",
                     "e-port certificate profile"):
        assert expected in names


def test_no_citation_of_a_file_outside_the_repository_or_an_issue() -> None:
    found = []
    for path in repository_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPOSITORY)}:{number}: {what}: {line.strip()}")
    assert found == [], "\n".join(found)


def test_every_section_citation_names_a_source_of_docs_sources() -> None:
    names = short_names()
    found = []
    for path in repository_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            previous = lines[number - 2] if number > 1 else ""
            for before in unknown_section_citations(line, names, previous):
                found.append(f"{path.relative_to(REPOSITORY)}:{number}: …{before}§")
    assert found == [], "unknown short names (add them to docs/sources.md):\n" + "\n".join(found)


def test_the_citation_check_catches_what_it_should() -> None:
    names = short_names()
    assert unknown_section_citations("the rule (bonded manual §2.4, §2.2.1.3)", names) == []
    assert unknown_section_citations("as the QP FAQ §十三(八) says", names) == []
    assert unknown_section_citations("(RFC 5280 §4.2.1.3)", names) == []
    assert unknown_section_citations("(handbook §3)", names) == ["(handbook"]
    assert unknown_section_citations("manual §2.4)", names, "(the bonded") == []
    assert unknown_section_citations("# DESIGN §3", names) == ["design"]
    assert unknown_section_citations('"to operator cards (e-book " "manual §4)."', names) == []
    assert unknown_section_citations('"manual §4)."', names, '"grants (e-book "') == []
    assert FORBIDDEN["an issue number"].search("see issue 3")
    assert FORBIDDEN["a source document by its seed number"].search("(Seed 003 十三)")
    assert not FORBIDDEN["a source document by its seed number"].search("--seed 1")
