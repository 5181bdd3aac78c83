"""Opening uploaded PDFs with pypdf: what is accepted, and what a user is told otherwise."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.pioneer.config import Settings
from services.pioneer.errors import InvalidInput
from services.pioneer.steps import pdf
from services.pioneer.steps.documents import bounded_in_worker, document_tools
from tests.documents import pdfs


def test_a_readable_pdf_opens_with_its_pages_and_text() -> None:
    opened = pdf.open_pdf(pdfs.sectioned_pdf(5))
    assert (opened.total_pages, opened.version) == (5, "1.3")
    first = pdf.page_text(opened, 0)
    assert first.splitlines()[:3] == [
        pdfs.RUNNING_HEADER,
        "Página 1 de 5",
        "1. Introducción al tema 1",
    ]
    assert pdf.page_text(opened, 4).count(pdfs.BODY_LINE) == 40


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            pdfs.encrypted_pdf(),
            "the document is encrypted (password-protected); upload a copy saved without a "
            "password or restrictions",
        ),
        (pdfs.empty_pdf(), "the document has no pages"),
        (
            pdfs.truncated_pdf(),
            "the document is corrupt or truncated and cannot be read as a PDF "
            "(Stream has ended unexpectedly)",
        ),
        (
            b"%PDF-1.7\n" + bytes(range(256)) * 4,
            "the document is corrupt or truncated and cannot be read as a PDF",
        ),
    ],
)
def test_unreadable_documents_are_refused_with_the_reason(document: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        pdf.open_pdf(document)
    assert str(refused.value).startswith(message)


def test_the_page_count_is_capped() -> None:
    with pytest.raises(InvalidInput, match=r"^the document has 6 pages, more than the 5 allowed$"):
        pdf.open_pdf(pdfs.sectioned_pdf(6), max_pages=5)
    assert pdf.open_pdf(pdfs.sectioned_pdf(5), max_pages=5).total_pages == 5


def test_a_damaged_page_names_itself_without_raw_bytes() -> None:
    opened = pdf.open_pdf(pdfs.damaged_pdf())
    assert opened.total_pages == 3
    assert pdf.page_text(opened, 0) and pdf.page_text(opened, 2)
    with pytest.raises(InvalidInput) as refused:
        pdf.page_text(opened, 1)
    assert str(refused.value) == (
        "page 2 cannot be read: the document is damaged "
        "(Invalid Elementary Object starting with b')')"
    )


def test_a_zlib_bomb_is_refused_without_inflating_it() -> None:
    opened = pdf.open_pdf(pdfs.zlib_bomb_pdf())
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=r"^page 1 is too complex to read safely"):
        pdf.page_text(opened, 0)
    # Inflating the 80 MB and parsing it takes seconds; the refusal comes at pypdf's cap.
    assert time.monotonic() - started < 2


async def test_a_call_over_its_time_bound_is_refused_and_the_loop_stays_free() -> None:
    pool = document_tools(Settings(document_workers=1)).pool
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        with pytest.raises(InvalidInput, match=r"^the document took more than 0\.2 s to open"):
            await bounded_in_worker(pool, 0.2, "open", time.sleep, 1.0)
        assert ticks >= 10
        assert await bounded_in_worker(pool, 1.0, "open", len, b"abc") == 3
    finally:
        ticker.cancel()
        await pool.close()
