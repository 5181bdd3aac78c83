"""An uploaded document as the legacy clients send it: strict base64, a declared mime checked
against the bytes, and a size limit. Pure functions: no gRPC, no I/O.

Every refusal is an `InvalidInput` whose message tells the sender what to fix, naming the
position (0-based, in characters of the base64 text) of the first offending character.
"""

from __future__ import annotations

import base64
import binascii
import re

from services.pioneer.errors import InvalidInput

MIB = 1024 * 1024
DEFAULT_MAX_DOCUMENT_BYTES = 48 * MIB
PDF_MIME = "application/pdf"
# `application/x-pdf` is what some older clients and mail programs still send.
PDF_MIMES = frozenset({PDF_MIME, "application/x-pdf"})
# Acrobat accepts a PDF whose header starts anywhere in its first 1024 bytes (PDF 1.7,
# implementation note 13); so do we, as files with a short preamble are common.
PDF_MAGIC = b"%PDF-"
PDF_HEADER_WINDOW = 1024

_OUTSIDE_ALPHABET = re.compile(rb"[^A-Za-z0-9+/=]")
_NON_ASCII_TEXT = re.compile(r"[^\x00-\x7f]")
_NON_ASCII_BYTE = re.compile(rb"[\x80-\xff]")
_WHITESPACE_NAMES = {
    ord("\n"): "a newline",
    ord("\r"): "a carriage return",
    ord("\t"): "a tab",
    ord(" "): "a space",
}
# What the first bytes of common uploads that are not PDFs look like, for a useful refusal.
_MAGIC_NAMES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive (a .docx, .xlsx or .zip file)"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office file (.doc, .xls)"),
    (b"{\\rtf", "an RTF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def max_encoded_chars(max_bytes: int) -> int:
    """The length of the base64 text of a `max_bytes` document, padding included."""
    return 4 * -(-max_bytes // 3)


def decode_base64(encoded: str | bytes, *, max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of strictly valid, standard-alphabet, padded base64 text on one line.

    `encoded` is the text itself, or its UTF-8 bytes as the engine stores a large input value.
    Refused, each with its own message: empty text, a document over `max_bytes` once decoded,
    non-ASCII characters, a `data:` URL prefix, whitespace or line breaks, the URL-safe
    alphabet, any other character outside the standard alphabet, misplaced or missing padding.
    """
    if not encoded:
        raise InvalidInput("base64 is empty: the request carries no document")
    check_encoded_size(len(encoded), max_bytes)
    raw = _ascii(encoded)
    if raw[:5].lower() == b"data:":
        comma = raw.find(b",", 0, 200)
        prefix = (raw[: comma + 1] if comma != -1 else raw[:40]).decode()
        raise InvalidInput(
            f"base64 starts with a data: URL prefix ({prefix!r}); "
            "send only the base64 text that follows the comma"
        )
    bad = _OUTSIDE_ALPHABET.search(raw)
    if bad is not None:
        raise InvalidInput(_outside_alphabet_message(raw[bad.start()], bad.start()))
    _check_padding(raw)
    try:
        data = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:  # the checks above leave nothing for it to find; kept as a net
        raise InvalidInput(f"base64 is not valid: {exc}") from None
    if len(data) > max_bytes:
        raise InvalidInput(_too_large_message(len(data), max_bytes))
    return data


def normalize_mime(declared: object) -> str:
    """The declared mime, lower-cased and without parameters; only PDF is processed."""
    if not isinstance(declared, str) or not declared.strip():
        raise InvalidInput(f"mime: required, the document's type ({PDF_MIME!r})")
    mime = declared.split(";", 1)[0].strip().lower()
    if mime not in PDF_MIMES:
        raise InvalidInput(
            f"mime {declared!r} is not supported: this workflow processes PDF documents "
            f"({PDF_MIME})"
        )
    return PDF_MIME


def check_is_pdf(declared_mime: str, data: bytes) -> None:
    """Refuses bytes that do not carry a PDF header where the declared mime promises one."""
    if PDF_MAGIC in data[: PDF_HEADER_WINDOW + len(PDF_MAGIC)]:
        return
    raise InvalidInput(
        f"declared mime {declared_mime} but the bytes are not a PDF ({describe_bytes(data)})"
    )


def describe_bytes(data: bytes) -> str:
    """What the start of a document that is not a PDF looks like, in words."""
    if not data:
        return "the document is empty"
    for magic, name in _MAGIC_NAMES:
        if data.startswith(magic):
            return f"they look like {name}"
    head = data[:64]
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        return f"they look like plain text starting with {head[:24].decode()!r}"
    return f"they start with {data[:8]!r}"


def _ascii(encoded: str | bytes) -> bytes:
    if isinstance(encoded, str):
        match = _NON_ASCII_TEXT.search(encoded)
        if match is not None:
            raise InvalidInput(
                f"base64 contains a non-ASCII character at position {match.start()} "
                f"({match.group()!r}); base64 text uses only A-Z, a-z, 0-9, '+', '/' and '='"
            )
        return encoded.encode("ascii")
    byte = _NON_ASCII_BYTE.search(encoded)
    if byte is not None:
        # The engine stored the text as UTF-8: up to the first non-ASCII byte, bytes and
        # characters line up, so the position is the same in the text the client sent.
        raise InvalidInput(
            f"base64 contains a non-ASCII character at position {byte.start()}; "
            "base64 text uses only A-Z, a-z, 0-9, '+', '/' and '='"
        )
    return encoded


def _outside_alphabet_message(byte: int, position: int) -> str:
    if byte in _WHITESPACE_NAMES:
        return (
            f"base64 contains {_WHITESPACE_NAMES[byte]} at position {position}: "
            "send it on one line, without spaces or line breaks"
        )
    if byte in b"-_":
        return (
            f"base64 uses the URL-safe alphabet ({chr(byte)!r} at position {position}); "
            "use the standard alphabet, with '+' and '/'"
        )
    return (
        f"base64 contains characters outside the standard alphabet at position {position} "
        f"({chr(byte)!r})"
    )


def _check_padding(raw: bytes) -> None:
    first_pad = raw.find(b"=")
    if first_pad != -1:
        tail = raw[first_pad:]
        if tail.strip(b"="):
            raise InvalidInput(
                f"base64 has '=' padding inside the text, at position {first_pad}: "
                "padding may only end it"
            )
        if len(tail) > 2:
            raise InvalidInput(
                f"base64 ends with {len(tail)} '=' padding characters; at most 2 are allowed"
            )
    if len(raw) % 4:
        raise InvalidInput(
            f"base64 has {len(raw)} characters, not a multiple of 4: its '=' padding is "
            "missing or the text was cut short"
        )


def check_encoded_size(chars: int, max_bytes: int) -> None:
    """Refuses base64 text of `chars` characters that decodes to more than `max_bytes`;
    checked before decoding, so a 1 GB upload is not decoded only to be thrown away."""
    if chars > max_encoded_chars(max_bytes):
        raise InvalidInput(_too_large_message(chars * 3 // 4, max_bytes))


def _too_large_message(size: int, max_bytes: int) -> str:
    return (
        f"the document is {size / MIB:.1f} MiB once decoded, more than the "
        f"{max_bytes / MIB:g} MiB allowed"
    )
