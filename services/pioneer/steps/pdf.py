"""Reading an uploaded PDF with pypdf: open and check it, count its pages, extract the text of
one page. Pure and synchronous (no gRPC, no event loop): the steps run these functions in a
worker process (services/pioneer/workers.py), one bounded call at a time; `open_in_worker` and
`page_text_in_worker` keep the opened document there between the calls of one step.

A document is refused with an `InvalidInput` that says why in words a user understands:
corrupt or truncated, encrypted, without pages, or with more pages than allowed. Against
documents built to exhaust a reader (PDF bombs), pypdf 7 bounds decompression, stream parsing
and form nesting itself; the page cap and the callers' time bounds are the outer fence.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, LimitReachedError

from services.pioneer import workers
from services.pioneer.errors import InvalidInput

DEFAULT_MAX_PAGES = 2000
# Pages of the extracted text are joined by a form feed, as pdftotext does: a page break that
# text never holds otherwise, so later steps can split the text back into pages.
PAGE_SEPARATOR = "\f"
# Cause quoted in a refusal, cut so that a message stays readable.
_MAX_CAUSE_CHARS = 160
_RAW_DUMP = re.compile(r"\s@\d+|: b['\"]")


@dataclass(frozen=True)
class OpenedPdf:
    reader: PdfReader
    total_pages: int
    # "1.7" for a file whose header is "%PDF-1.7".
    version: str


def open_pdf(data: bytes, *, max_pages: int = DEFAULT_MAX_PAGES) -> OpenedPdf:
    """A reader on `data` once it is known to be a readable, unencrypted PDF with 1 to
    `max_pages` pages."""
    # pypdf raises many exception types on malformed files (its own, but also ValueError,
    # KeyError, TypeError, RecursionError… from deep in its parser): for a document from
    # outside, any failure to parse means "this file is damaged", so every Exception is caught
    # in these narrow blocks around pypdf calls and turned into a refusal that names its cause.
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except LimitReachedError as exc:
        raise _too_complex(exc) from None
    except Exception as exc:
        raise InvalidInput(
            f"the document is corrupt or truncated and cannot be read as a PDF ({_cause(exc)})"
        ) from None
    if encrypted:
        raise InvalidInput(
            "the document is encrypted (password-protected); upload a copy saved without a "
            "password or restrictions"
        )
    try:
        total = len(reader.pages)
        version = reader.pdf_header.removeprefix("%PDF-")
    except FileNotDecryptedError:
        raise InvalidInput("the document is encrypted (password-protected)") from None
    except LimitReachedError as exc:
        raise _too_complex(exc) from None
    except Exception as exc:
        raise InvalidInput(
            f"the document is corrupt: its list of pages cannot be read ({_cause(exc)})"
        ) from None
    if total == 0:
        raise InvalidInput("the document has no pages")
    if total > max_pages:
        raise InvalidInput(f"the document has {total} pages, more than the {max_pages} allowed")
    return OpenedPdf(reader, total, version)


def page_text(pdf: OpenedPdf, index: int) -> str:
    """The text of page `index` (0-based), its layout reduced to lines."""
    try:
        text = pdf.reader.pages[index].extract_text()
    except LimitReachedError as exc:
        raise InvalidInput(
            f"page {index + 1} is too complex to read safely; the document may be built to "
            f"exhaust PDF readers ({_cause(exc)})"
        ) from None
    except Exception as exc:  # any parse failure is a damaged page: see open_pdf
        raise InvalidInput(
            f"page {index + 1} cannot be read: the document is damaged ({_cause(exc)})"
        ) from None
    # A form feed inside a page would read as a page break to the steps that follow.
    return text.replace(PAGE_SEPARATOR, "\n")


def open_in_worker(data: bytes, *, max_pages: int = DEFAULT_MAX_PAGES) -> tuple[int, str]:
    """`open_pdf` in a worker, kept for `page_text_in_worker`: (total pages, version)."""
    opened = open_pdf(data, max_pages=max_pages)
    workers.session["pdf"] = opened
    return opened.total_pages, opened.version


def page_text_in_worker(index: int) -> str:
    """`page_text` of the document `open_in_worker` opened in this worker."""
    opened: OpenedPdf = workers.session["pdf"]
    return page_text(opened, index)


def _too_complex(exc: Exception) -> InvalidInput:
    return InvalidInput(
        "the document is too complex to read safely; it may be built to exhaust PDF readers "
        f"({_cause(exc)})"
    )


def _cause(exc: Exception) -> str:
    # pypdf appends the offset and a dump of raw bytes ("… @879: b'…'"): not for a user.
    text = _RAW_DUMP.split(str(exc), maxsplit=1)[0].strip() or type(exc).__name__
    if len(text) > _MAX_CAUSE_CHARS:
        text = text[: _MAX_CAUSE_CHARS - 1] + "…"
    return text
