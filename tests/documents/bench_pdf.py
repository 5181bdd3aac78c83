"""Benchmark: a 100-page PDF through "Procesar Documentos" on the real stack, next to pypdf
alone on the same document in the same run.

    PYTHONPATH=.:generated .venv/bin/python -m tests.documents.bench_pdf [--pages 100] [--runs 3]

Not collected by pytest (no `test_` prefix). The stack is the tests' one: an in-process engine
and pioneer on real sockets, and an in-process SecantusDB in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import uuid

from discovery.engine.v1 import execution_pb2 as ex_pb
from pypdf import PdfReader
from secantus import SecantusDBServer

from services.engine.store.embedded import mongo_uri
from services.grpc_auth import BearerToken
from services.pioneer.workflows import EXTRACT_STEP, ensure_document_workflow
from tests.documents import pdfs
from tests.stack import start_stack, token


def pypdf_alone(document: bytes) -> float:
    """Seconds to open the document and extract every page's text: the floor for the step."""
    started = time.perf_counter()
    reader = PdfReader(io.BytesIO(document))
    for page in reader.pages:
        page.extract_text()
    return time.perf_counter() - started


async def through_the_stack(document: bytes, runs: int) -> list[tuple[float, float]]:
    """(whole workflow seconds, extract_text step seconds) per run, after one warm-up run."""
    results: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as path:
        server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=path)
        server.start()
        stack = await start_stack(mongo_uri(server.uri), f"bench{uuid.uuid4().hex[:8]}")
        try:
            workflow = await ensure_document_workflow(stack.client.target, BearerToken(token()))
            body = {"base64": pdfs.b64(document), "mime": "application/pdf"}
            for run in range(runs + 1):
                started = time.perf_counter()
                execution = await stack.client.start(workflow.workflow_id, body)
                final = await stack.client.wait_terminal(execution.execution_id, 300)
                took = time.perf_counter() - started
                if final.status != ex_pb.EXECUTION_STATUS_COMPLETED:
                    raise SystemExit(f"run {run} ended {final.status}: {final.error.message}")
                extract = next(a for a in final.steps_history if a.step_name == EXTRACT_STEP)
                if run:  # the first run warms up connections and caches
                    results.append((took, extract.duration_seconds))
        finally:
            await stack.stop()
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    document = pdfs.sectioned_pdf(args.pages)
    baseline = statistics.median(pypdf_alone(document) for _ in range(args.runs))
    results = asyncio.run(through_the_stack(document, args.runs))
    total = statistics.median(r[0] for r in results)
    extract = statistics.median(r[1] for r in results)
    pages = args.pages
    print(f"document: {pages} pages, {len(document)} bytes; median of {args.runs} runs")
    print(f"  pypdf alone (open + extract):   {baseline:7.3f} s  {pages / baseline:8.1f} pages/s")
    print(f"  extract_text step on the stack: {extract:7.3f} s  {pages / extract:8.1f} pages/s")
    print(f"  whole workflow, start to end:   {total:7.3f} s  {pages / total:8.1f} pages/s")
    print(f"  step overhead over pypdf alone: {(extract - baseline) / pages * 1000:7.2f} ms/page")


if __name__ == "__main__":
    main()
