"""Finding the section headings of a document's extracted text. Pure: no gRPC, no I/O.

Text extracted from a PDF keeps no fonts or sizes, so headings are recognised by their shape.
A line (whitespace collapsed, at most 120 characters) is a heading when it is:

1. **keyword**: "Capítulo", "Sección", "Parte", "Anexo", "Apéndice", "Chapter", "Section",
   "Part", "Appendix" or "Annex" (any case, starting with a capital), then a number, a roman
   numeral or a single letter, then nothing or a title ("Capítulo 2: Alcance", "CHAPTER IV",
   "Sección 3.1 Datos"). "Section 3 of the contract" is prose: the word after the number
   must start with a capital or follow a ':', '.', '-' or dash.
2. **numbered**: "1.", "1.2", "2.3.1" (up to 4 levels: 1 to 3 digits, then 1 or 2 digits per
   level), then a title that starts with a capital, has at most 12 words and does not end like
   a sentence ('.', ',', ';'). "1.5 kg de harina", "2024 fue un buen año" and
   "4.500.000 EUR" are not headings.
3. **all caps**: at least 4 letters, every letter upper-case, at most 10 words, mostly
   letters ("INTRODUCCIÓN", "II. MARCO TEÓRICO").

Not headings: table-of-contents entries (dot leaders, "Introducción ........ 3"), and running
headers and footers, i.e. a line found on 3 or more pages (for all-caps lines, with digits
ignored, so "PÁGINA 3 DE 40" on every page is a footer too). A keyword heading alone on its
line ("CAPÍTULO 1") takes the heading on the next line of its page as its title
("CAPÍTULO 1 INTRODUCCIÓN").
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_HEADING_CHARS = 120
RUNNING_LINE_PAGES = 3

_KEYWORD = re.compile(
    r"^(?:cap[ií]tulo|secci[oó]n|parte|anexo|ap[eé]ndice|chapter|section|part|appendix|annex)"
    r"\s+(?:\d{1,3}(?:\.\d{1,3}){0,3}|[ivxlcdm]{1,7}|[a-z])\b\.?(?P<rest>.*)$",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^(?P<number>\d{1,3}(?:\.\d{1,2}){0,3})\.?\s+(?P<title>\S.*)$")
_TOC_LEADER = re.compile(r"(?:\.\s?){4,}|…{2,}|_{4,}")
_DIGITS = re.compile(r"\d+")
# Between a keyword heading's number and its title: colon, full stop, hyphen, en and em dash.
_SEPARATORS = ":.-\u2013\u2014"


@dataclass(frozen=True)
class Section:
    title: str
    # 1-based page the heading is on.
    page: int
    # "keyword", "numbered" or "caps".
    kind: str
    # 1 for "2.", 2 for "2.3"…; 1 for keyword and all-caps headings.
    level: int

    def as_dict(self) -> dict[str, object]:
        return {"title": self.title, "page": self.page, "kind": self.kind, "level": self.level}


def find_sections(pages: Sequence[str]) -> list[Section]:
    """The headings of a document whose pages' texts are `pages`, in reading order."""
    candidates = [
        section for number, text in enumerate(pages, start=1) for section in _page(number, text)
    ]
    pages_by_key: defaultdict[str, set[int]] = defaultdict(set)
    for section in candidates:
        pages_by_key[_running_key(section)].add(section.page)
    return [
        section
        for section in candidates
        if len(pages_by_key[_running_key(section)]) < RUNNING_LINE_PAGES
    ]


def classify(line: str) -> tuple[str, int] | None:
    """(kind, level) when `line` (already stripped and collapsed) reads as a heading."""
    if not line or len(line) > MAX_HEADING_CHARS or _TOC_LEADER.search(line):
        return None
    keyword = _KEYWORD.match(line)
    if keyword is not None and line[0].isupper():
        rest = keyword.group("rest").strip()
        if not rest or rest[0] in _SEPARATORS or rest[0].isupper() or rest[0].isdigit():
            return "keyword", 1
        return None
    numbered = _NUMBERED.match(line)
    if numbered is not None:
        title = numbered.group("title")
        if title[0].isupper() and len(title.split()) <= 12 and title[-1] not in ".,;":
            return "numbered", numbered.group("number").count(".") + 1
        return None
    if _is_caps(line):
        return "caps", 1
    return None


def _page(number: int, text: str) -> Iterable[Section]:
    lines = [" ".join(raw.split()) for raw in text.splitlines()]
    lines = [line for line in lines if line]
    skip_next = False
    for index, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        found = classify(line)
        if found is None:
            continue
        kind, level = found
        title = line
        if kind == "keyword" and not _has_title(line) and index + 1 < len(lines):
            following = lines[index + 1]
            if classify(following) == ("caps", 1) or _is_title_like(following):
                title = f"{line} {following}"[:MAX_HEADING_CHARS]
                skip_next = True
        yield Section(title=title, page=number, kind=kind, level=level)


def _has_title(line: str) -> bool:
    match = _KEYWORD.match(line)
    return match is not None and bool(match.group("rest").strip(" " + _SEPARATORS))


def _is_title_like(line: str) -> bool:
    """A short line starting with a capital and not ending like a sentence."""
    return (
        bool(line)
        and line[0].isupper()
        and len(line.split()) <= 12
        and line[-1] not in ".,;"
        and classify(line) is None
    )


def _is_caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    if len(letters) < 4 or len(line.split()) > 10 or line[-1] == ",":
        return False
    if any(c.islower() for c in letters):
        return False
    visible = [c for c in line if not c.isspace()]
    # Mostly letters: "4.500.000 EUR" or "ID: 12345-ABCD" is data, not a heading.
    return len(letters) >= 0.6 * len(visible)


def _running_key(section: Section) -> str:
    if section.kind == "caps":
        return "caps:" + _DIGITS.sub("#", section.title)
    return f"{section.kind}:{section.title}"
