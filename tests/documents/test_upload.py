"""Strict base64, the declared mime against the bytes, and the size limit: what a client that
sends a bad upload is told."""

from __future__ import annotations

import base64

import pytest

from services.pioneer.errors import InvalidInput
from services.pioneer.steps.upload import (
    check_is_pdf,
    decode_base64,
    describe_bytes,
    max_encoded_chars,
    normalize_mime,
)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\nbody"
ENCODED = base64.b64encode(PDF).decode()


@pytest.mark.parametrize("encoded", [ENCODED, ENCODED.encode()])
def test_standard_base64_decodes_whether_inline_text_or_blob_bytes(encoded: str | bytes) -> None:
    assert decode_base64(encoded) == PDF


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("", "base64 is empty: the request carries no document"),
        (
            "JVBERi0xLjQK*ZmFrZQ==",
            "base64 contains characters outside the standard alphabet at position 12 ('*')",
        ),
        (
            ENCODED[:8] + "\n" + ENCODED[8:],
            "base64 contains a newline at position 8: send it on one line, without spaces or "
            "line breaks",
        ),
        (ENCODED[:4] + "\r\n" + ENCODED[4:], "base64 contains a carriage return at position 4"),
        (" " + ENCODED, "base64 contains a space at position 0"),
        (ENCODED + "\t", "base64 contains a tab at position"),
        (
            "JVBERi0x-jQK",
            "base64 uses the URL-safe alphabet ('-' at position 8); use the standard alphabet, "
            "with '+' and '/'",
        ),
        ("JVBE_i0xLjQK", "base64 uses the URL-safe alphabet ('_' at position 4)"),
        (
            "data:application/pdf;base64," + ENCODED,
            "base64 starts with a data: URL prefix ('data:application/pdf;base64,'); send only "
            "the base64 text that follows the comma",
        ),
        ("JVBERi0xLjQKé", "base64 contains a non-ASCII character at position 12 ('é')"),
        ("JVBE=i0xLjQK", "base64 has '=' padding inside the text, at position 4"),
        ("JVBERi0xLjQ===", "base64 ends with 3 '=' padding characters; at most 2 are allowed"),
        (
            ENCODED.rstrip("="),
            "not a multiple of 4: its '=' padding is missing or the text was cut short",
        ),
    ],
)
def test_bad_base64_is_refused_with_what_to_fix(encoded: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_base64(encoded)
    assert message in str(refused.value)
    assert refused.value.step_error_reason == "invalid_input"


def test_non_ascii_bytes_from_a_blob_are_located() -> None:
    with pytest.raises(InvalidInput, match=r"non-ASCII character at position 6;"):
        decode_base64("JVBERi\u00f1xLjQK".encode())


def test_the_size_limit_counts_decoded_bytes() -> None:
    exactly = base64.b64encode(bytes(1000)).decode()
    assert len(decode_base64(exactly, max_bytes=1000)) == 1000
    # 1001 bytes still fit in the base64 length of 1002: refused once decoded.
    with pytest.raises(InvalidInput, match=r"once decoded, more than the"):
        decode_base64(base64.b64encode(bytes(1001)).decode(), max_bytes=1000)
    # Far over: refused from its length alone, before decoding.
    with pytest.raises(InvalidInput, match=r"^the document is 1\.0 MiB once decoded, more than"):
        decode_base64("A" * (4 * 1024 * 1024 // 3 + 4), max_bytes=1000)
    assert max_encoded_chars(1000) == 1336


@pytest.mark.parametrize(
    "declared",
    ["application/pdf", "APPLICATION/PDF", "application/pdf; charset=binary", "application/x-pdf"],
)
def test_pdf_mimes_are_accepted_and_normalized(declared: str) -> None:
    assert normalize_mime(declared) == "application/pdf"


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (None, "mime: required"),
        ("", "mime: required"),
        (42, "mime: required"),
        (
            "image/png",
            "mime 'image/png' is not supported: this workflow processes PDF documents",
        ),
    ],
)
def test_other_mimes_are_refused(declared: object, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalize_mime(declared)
    assert message in str(refused.value)


def test_a_pdf_header_may_follow_a_short_preamble() -> None:
    check_is_pdf("application/pdf", PDF)
    check_is_pdf("application/pdf", b"\xef\xbb\xbf" + b"x" * 1000 + PDF)
    with pytest.raises(InvalidInput, match=r"^declared mime application/pdf but the bytes"):
        check_is_pdf("application/pdf", b"x" * 1100 + PDF)


@pytest.mark.parametrize(
    ("data", "description"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "they look like a PNG image"),
        (b"\xff\xd8\xff\xe0JFIF", "they look like a JPEG image"),
        (b"PK\x03\x04\x14\x00", "they look like a ZIP archive (a .docx, .xlsx or .zip file)"),
        (b"Hello, this is not a PDF", "they look like plain text starting with 'Hello, this is"),
        (b"\x00\x01\x02\x03\x04\x05\x06\x07\x08", "they start with b'\\x00\\x01"),
        (b"", "the document is empty"),
    ],
)
def test_bytes_that_are_not_a_pdf_are_described(data: bytes, description: str) -> None:
    assert describe_bytes(data).startswith(description)
    with pytest.raises(InvalidInput) as refused:
        check_is_pdf("application/pdf", data)
    assert str(refused.value) == (
        f"declared mime application/pdf but the bytes are not a PDF ({describe_bytes(data)})"
    )
