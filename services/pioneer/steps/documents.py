"""The steps of the seed's document workflow, "Procesar Documentos" (see `workflows.py`):

```
load_document       base64 + mime + nombre_documento  ->  {"document": {blob ref, mime, name}}
validate_document   document                          ->  {"total_pages", "pdf_version"}
extract_text        document                          ->  {"text": {blob ref, counts}, …}
find_sections       text                              ->  {"sections_found", "sections"}
finish              document, text, sections_found    ->  the seed's completion + text_preview
```

Documents and texts travel as blobs stored with the engine (`write_blob`/`read_blob`); only
their references flow through the execution's context. A document the user must fix (bad
base64, not a PDF, encrypted, corrupt, too large) fails its step with `InvalidInput`, reported
with reason `invalid_input` and a message that says what is wrong. The pure parts live apart:
`upload.py` (base64, mime), `pdf.py` (pypdf), `sections.py` (headings).

pypdf and the section finder are CPU-bound Python fed by the user: every call runs in a worker
process (`workers.py`), bounded in time and memory, so the event loop keeps sending heartbeats
and a hostile document can neither hold a step forever nor take the machine's memory. A call
over its bound has its worker killed and the step fails at once; the next document gets a
fresh worker.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from services.pioneer.config import Settings
from services.pioneer.context import StepContext
from services.pioneer.errors import InvalidInput, StepCancelled, StepFailure
from services.pioneer.registry import step
from services.pioneer.sdk import info, report_completion
from services.pioneer.steps import pdf, sections, upload
from services.pioneer.workers import Worker, WorkerPool

P = ParamSpec("P")
T = TypeVar("T")

# Sections listed by name in find_sections' output; the count covers them all.
LISTED_SECTIONS = 20
TEXT_PREVIEW_CHARS = 500
MAX_NAME_CHARS = 255


@dataclass(frozen=True)
class DocumentLimits:
    """Bounds on what the document steps accept (pioneer's settings: document_tools)."""

    max_document_bytes: int = upload.DEFAULT_MAX_DOCUMENT_BYTES
    max_pages: int = pdf.DEFAULT_MAX_PAGES
    # Opening a document and reading its page tree.
    open_seconds: float = 30.0
    # Extracting the text of one page.
    page_seconds: float = 20.0
    # Finding the sections of the whole text.
    sections_seconds: float = 60.0
    # The extracted text, as UTF-8; under the engine's blob cap (64 MiB).
    max_text_bytes: int = 32 * upload.MIB


@dataclass(frozen=True)
class DocumentTools:
    """What the document steps are given by the runner (context.Resources): their limits and
    the worker processes they read documents in."""

    limits: DocumentLimits
    pool: WorkerPool


def document_tools(settings: Settings) -> DocumentTools:
    """As `settings` size them. The workers start when a step first needs one; the runner
    closes the pool when it stops."""
    return DocumentTools(
        DocumentLimits(
            max_document_bytes=settings.max_document_bytes, max_pages=settings.max_pdf_pages
        ),
        WorkerPool(
            settings.document_worker_count(),
            settings.worker_memory_mib * upload.MIB,
            preload=(pdf.__name__, sections.__name__),
        ),
    )


@step(
    "load_document",
    description="Decodes the base64 document, checks its type and size, and stores it.",
    input_keys=("base64", "mime", "nombre_documento"),
)
async def load_document(ctx: StepContext) -> dict[str, Any]:
    limits = ctx.resource(DocumentTools).limits
    mime = upload.normalize_mime(ctx.input.get("mime"))
    name = _document_name(ctx.input.get("nombre_documento"))
    encoded = await _encoded_document(ctx, limits.max_document_bytes)
    data = await asyncio.to_thread(
        upload.decode_base64, encoded, max_bytes=limits.max_document_bytes
    )
    del encoded  # a blob's bytes (up to 64 MiB) are not held while the document is stored
    upload.check_is_pdf(mime, data)
    digest = await asyncio.to_thread(_sha256, data)
    await ctx.report_progress(
        {
            "percentage": 50.0,
            "message": f"decoded {len(data)} bytes; storing the document",
            "current_task": "Storing the document",
        }
    )
    ref = await ctx.write_blob(data)
    if ref["sha256"] != digest:
        # Not the user's fault: a plain step failure, not invalid_input.
        raise StepFailure("the engine stored the document with another sha256 than was sent")
    return {"document": {**ref, "mime": mime, "nombre_documento": name}}


@step(
    "validate_document",
    description="Checks that the stored document is a readable, unencrypted PDF with pages.",
    input_keys=("document",),
)
async def validate_document(ctx: StepContext) -> dict[str, Any]:
    tools = ctx.resource(DocumentTools)
    limits = tools.limits
    data = await ctx.read_blob(_blob_ref(ctx, "document", "load_document")["blob_id"])
    total, version = await bounded_in_worker(
        tools.pool,
        limits.open_seconds,
        "open",
        pdf.open_in_worker,
        data,
        max_pages=limits.max_pages,
    )
    return {"total_pages": total, "pdf_version": version}


@step(
    "extract_text",
    description="Extracts the text page by page, reporting each page; cancellable between pages.",
    input_keys=("document",),
)
async def extract_text(ctx: StepContext) -> dict[str, Any]:
    tools = ctx.resource(DocumentTools)
    limits = tools.limits
    data = await ctx.read_blob(_blob_ref(ctx, "document", "load_document")["blob_id"])
    # One worker for the whole step: it opens the document once and keeps it for the pages.
    async with tools.pool.lease() as worker:
        total, _ = await worker.call(
            limits.open_seconds, "open", pdf.open_in_worker, data, max_pages=limits.max_pages
        )
        del data
        texts = await _page_texts(ctx, worker, total, limits)
    full_text = pdf.PAGE_SEPARATOR.join(texts)
    ref = await ctx.write_blob(full_text.encode("utf-8", "replace"))
    return {
        "text": {
            **ref,
            "encoding": "utf-8",
            "pages": total,
            "characters": len(full_text) - (total - 1),
        },
        "pages_with_text": sum(1 for text in texts if text.strip()),
    }


@step(
    "find_sections",
    description="Finds the section headings of the extracted text (numbered, keyword, caps).",
    input_keys=("text",),
)
async def find_sections(ctx: StepContext) -> dict[str, Any]:
    pages = await _pages(ctx)
    tools = ctx.resource(DocumentTools)
    found = await bounded_in_worker(
        tools.pool,
        tools.limits.sections_seconds,
        "find its sections",
        sections.find_sections,
        pages,
    )
    return {
        "sections_found": len(found),
        "sections": [section.as_dict() for section in found[:LISTED_SECTIONS]],
    }


@step(
    "finish",
    description="Reports the seed's completion: document processed, sections found, preview.",
    input_keys=("document", "text", "sections_found"),
)
async def finish(ctx: StepContext) -> None:
    document = _blob_ref(ctx, "document", "load_document")
    found = ctx.input.get("sections_found")
    if isinstance(found, bool) or not isinstance(found, int | float):
        raise StepFailure("finish needs `sections_found`, the output of find_sections")
    pages = await _pages(ctx)
    preview = "\n\n".join(page.strip() for page in pages if page.strip())
    # The seed's own call, as a step written for the legacy system makes it.
    await report_completion(
        info().execution_id,
        info().step_name,
        {
            "success": True,
            "document_processed": True,
            "sections_found": int(found),
            "pdf_uploaded": bool(document.get("blob_id")),
            "nombre_documento": document.get("nombre_documento", ""),
            "text_preview": preview[:TEXT_PREVIEW_CHARS],
        },
    )


# --- helpers ----------------------------------------------------------------------------------


async def _page_texts(
    ctx: StepContext, worker: Worker, total: int, limits: DocumentLimits
) -> list[str]:
    """The text of each page of the document open in `worker`, each page reported."""
    texts: list[str] = []
    text_bytes = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Page n's report is in flight while page n+1 is read: reports still go out one at a
    # time and in page order (the engine drops progress that goes backwards), and the
    # engine's write no longer adds to every page's time.
    report: asyncio.Task[None] | None = None
    try:
        for index in range(total):
            if ctx.is_cancelled():
                raise StepCancelled(f"step {ctx.step_name!r} stopped before page {index + 1}")
            text = await worker.call(
                limits.page_seconds, f"read page {index + 1}", pdf.page_text_in_worker, index
            )
            text_bytes += len(text.encode("utf-8", "replace")) + 1
            if text_bytes > limits.max_text_bytes:
                raise InvalidInput(
                    f"the text of the document is over {limits.max_text_bytes / upload.MIB:g} "
                    f"MiB by page {index + 1}; it is too large to process"
                )
            texts.append(text)
            done = index + 1
            # The rate measured so far, reports included: what the remaining pages will take.
            per_page = (loop.time() - started) / done
            if report is not None:
                await report  # raises StepCancelled when the engine answered "cancelled"
            report = asyncio.create_task(
                ctx.report_progress(
                    {
                        "percentage": 100.0 * done / total,
                        "message": f"extracted the text of page {done} of {total}",
                        "current_task": "Extracting text",
                        "estimated_remaining_seconds": round(per_page * (total - done), 2),
                        "custom_data": {"pages_processed": done, "total_pages": total},
                    }
                )
            )
        if report is not None:
            await report
    finally:
        if report is not None and not report.done():
            report.cancel()
        elif report is not None and not report.cancelled():
            # Ended while a page was being read, and not awaited since (that page failed):
            # its error (StepCancelled) is seen here, not left for the loop to log.
            report.exception()
    return texts


async def _encoded_document(ctx: StepContext, max_bytes: int) -> str | bytes:
    """The base64 text: inline, or the bytes of the blob the engine kept it in (>= 64 KiB)."""
    value = ctx.input.get("base64")
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("blob_id"), str):
        size = value.get("size_bytes")
        if isinstance(size, int | float):
            # Refused before it is read: the reference says how large it is.
            upload.check_encoded_size(int(size), max_bytes)
        return await ctx.read_blob(value["blob_id"])
    if value is None:
        raise InvalidInput("base64: required, the document encoded in base64")
    raise InvalidInput(f"base64: expected the document as a base64 string, got {_kind(value)}")


def _document_name(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"nombre_documento: expected a file name, got {_kind(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidInput(f"nombre_documento: at most {MAX_NAME_CHARS} characters")
    return value


def _blob_ref(ctx: StepContext, key: str, producer: str) -> Mapping[str, Any]:
    """A blob reference an earlier step put in the context; missing means a miswired workflow."""
    ref = ctx.input.get(key)
    if not isinstance(ref, Mapping) or not isinstance(ref.get("blob_id"), str):
        raise StepFailure(
            f"step {ctx.step_name!r} needs `{key}`, the output of {producer}: "
            f"run {producer} before it in the workflow"
        )
    return ref


async def _pages(ctx: StepContext) -> list[str]:
    data = await ctx.read_blob(_blob_ref(ctx, "text", "extract_text")["blob_id"])
    return data.decode("utf-8", "replace").split(pdf.PAGE_SEPARATOR)


async def bounded_in_worker(
    pool: WorkerPool,
    seconds: float,
    what: str,
    function: Callable[P, T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`function` in a worker process of its own (see `workers.py`), refused as a hostile
    document once it has run for `seconds`. Time spent waiting for a free worker is the
    machine's load, not the document's doing: the clock starts when the call does."""
    async with pool.lease() as worker:
        return await worker.call(seconds, what, function, *args, **kwargs)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
