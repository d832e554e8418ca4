"""Decide a file's kind from its bytes; the name only tells text formats apart."""
from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

import filetype

from config.errors import ErrorCode
from documents.parsers.base import ParseError

KINDS = ("pdf", "docx", "txt", "md", "html", "csv")
# How much of the file content_sniff wants to see (the pipeline reads this much of the upload).
SNIFF_BYTES = 64 * 1024

_MARKDOWN_EXTENSIONS = {".md", ".markdown", ".mdown", ".mkd", ".mkdn"}
_CSV_EXTENSIONS = {".csv", ".tsv"}
_HTML_EXTENSIONS = {".html", ".htm", ".xhtml", ".shtml"}
_TEXT_CONTROLS_ALLOWED = set(b"\t\n\r\f\b\x1b")


def content_sniff(*, head: bytes, filename: str) -> str:
    """One of KINDS for the first bytes of a file (give at least SNIFF_BYTES when the file is that long).

    Raises ParseError: empty_document for no bytes, unsupported_type for anything else we cannot read
    (images, executables, archives, binary garbage), whatever the name says.
    """
    if not head.strip():
        raise ParseError("The file is empty.", code=ErrorCode.EMPTY_DOCUMENT)
    pdf_at = head.find(b"%PDF-", 0, 1024)  # readers accept (binary) junk before the header
    if pdf_at == 0 or (pdf_at > 0 and not _looks_like_text(head[:pdf_at])):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if b"word/document.xml" in head or (b"[Content_Types].xml" in head and b"word/" in head):
            return "docx"
        raise _unsupported(filename, "zip archive", "This is a ZIP archive, not a Word document.")
    guess = filetype.guess(head)
    if guess is not None and guess.extension not in ("pdf", "docx"):
        raise _unsupported(filename, guess.mime, f"Files of type {guess.mime} are not supported.")
    if not _looks_like_text(head):
        raise _unsupported(filename, "binary", "This file is not a document we can read.")
    return _text_kind(head, filename)


def content_sniff_path(*, path: Path, filename: str) -> str:
    """content_sniff on a stored file; a ZIP is judged by its central directory, not only by its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if "word/document.xml" in archive.namelist():
                    return "docx"
        except (zipfile.BadZipFile, OSError, ValueError):
            raise ParseError("The file is a damaged ZIP archive.", code=ErrorCode.CORRUPT_FILE) from None
    return content_sniff(head=head, filename=filename)


def _unsupported(filename: str, detected: str, message: str) -> ParseError:
    return ParseError(
        message + " Upload PDF, Word (.docx), text, Markdown, HTML or CSV.",
        code=ErrorCode.UNSUPPORTED_TYPE,
        details={"detected": detected, "filename": Path(filename or "").name[:200]},
        status_code=415,
    )


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            codecs.getincrementaldecoder("utf-16")().decode(head, final=False)
            return True
        except UnicodeDecodeError:
            return False
    if head.count(b"\x00") > max(1, len(head) // 1000):  # a stray NUL is tolerated (and removed when parsing)
        return False
    try:
        # The head may end inside a multi-byte character: not final.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return True
    except UnicodeDecodeError:
        pass
    # Legacy 8-bit text (Windows-1252, Latin-1): printable bytes only, with the odd exception.
    controls = sum(1 for byte in head if byte < 0x20 and byte not in _TEXT_CONTROLS_ALLOWED)
    return controls <= len(head) // 1000


def _text_kind(head: bytes, filename: str) -> str:
    suffix = Path((filename or "").lower()).suffix
    if suffix in _MARKDOWN_EXTENSIONS:
        return "md"
    if suffix in _CSV_EXTENSIONS:
        return "csv"
    if suffix in _HTML_EXTENSIONS:
        return "html"
    start = head[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html")) or (start.startswith(b"<?xml") and b"<html" in start):
        return "html"
    return "txt"
