"""Test documents, generated: PDFs with known text and headings (fpdf2), and the broken ones a
user might upload (encrypted, empty, truncated, not a PDF at all)."""

from __future__ import annotations

import base64
import io
import zlib

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

BODY_LINE = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor."
RUNNING_HEADER = "INFORME ANUAL DE PRUEBA"
# Headings of `sectioned_pdf`, by 1-based page, cycling: each kind the heuristic knows. A
# keyword heading alone on its line takes the next line as its title.
HEADING_CYCLE = (
    ("{n}. Introducción al tema {n}",),
    ("{n}.1 Alcance del estudio",),
    ("CAPÍTULO {n}", "MÉTODOS Y DATOS"),
    ("Sección {n}.2: Resultados",),
)
# The first bytes of a PNG file, for an upload that is not a PDF.
PNG_BYTES = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def sectioned_pdf(pages: int, *, heading_every: int = 4, lines_per_page: int = 40) -> bytes:
    """A PDF of `pages` pages: a running header and footer on each, a heading on every
    `heading_every`-th page (1, 5, 9…) and body text. See `expected_headings`."""
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    for index in range(pages):
        pdf.add_page()
        pdf.set_font("Helvetica", size=9)
        pdf.text(15, 12, RUNNING_HEADER)
        pdf.text(15, 290, f"Página {index + 1} de {pages}")
        y = 24.0
        heading = _heading(index, heading_every)
        if heading is not None:
            pdf.set_font("Helvetica", "B", 14)
            for line in heading:
                pdf.text(15, y, line)
                y += 8
        pdf.set_font("Helvetica", size=11)
        for _ in range(lines_per_page):
            pdf.text(15, y, BODY_LINE)
            y += 6
    return bytes(pdf.output())


def expected_headings(pages: int, *, heading_every: int = 4) -> list[tuple[str, int]]:
    """(title, page) of every heading `sectioned_pdf` writes, as find_sections reports them."""
    return [
        (" ".join(heading), index + 1)
        for index in range(pages)
        if (heading := _heading(index, heading_every)) is not None
    ]


def _heading(index: int, every: int) -> tuple[str, ...] | None:
    if index % every:
        return None
    number = index // every
    template = HEADING_CYCLE[number % len(HEADING_CYCLE)]
    return tuple(line.format(n=number // len(HEADING_CYCLE) + 1) for line in template)


def encrypted_pdf(password: str = "secreto") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(sectioned_pdf(2))))
    # RC4 needs no `cryptography` package; AES-encrypted files are refused the same way.
    writer.encrypt(password, algorithm="RC4-128")
    return _written(writer)


def empty_pdf() -> bytes:
    """A well-formed PDF with no pages."""
    return _written(PdfWriter())


def truncated_pdf() -> bytes:
    """A PDF cut in the middle, as an interrupted upload leaves it."""
    data = sectioned_pdf(4)
    return data[: len(data) // 2]


def damaged_pdf() -> bytes:
    """3 pages, of which the 2nd's content is a malformed object: the file opens, the page
    does not read."""
    data = sectioned_pdf(3)
    intact = b"6 0 obj\n<<\n/Filter"
    assert data.count(intact) == 1, "fpdf2 numbers the 2nd page's content stream 6"
    # Same length, so every offset in the cross-reference table stays right.
    return data.replace(intact, b"6 0 obj\n))\n/Filter")


def zlib_bomb_pdf(inflated_bytes: int = 80_000_000) -> bytes:
    """One page whose 80 KB content stream inflates to 80 MB of blanks, then shows "hidden"."""
    compressor = zlib.compressobj(9)
    block = b" " * 1_000_000
    parts = [compressor.compress(block) for _ in range(inflated_bytes // len(block))]
    parts.append(compressor.compress(b"BT /F1 12 Tf 10 10 Td (hidden) Tj ET"))
    parts.append(compressor.flush())
    content = b"".join(parts)
    return _hand_written_pdf(
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    )


def _hand_written_pdf(*objects: bytes) -> bytes:
    """A PDF of `objects` (numbered from 1, the first is the catalog) with a correct xref."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _written(writer: PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
