"""Turn an uploaded file into text sections: sniff its kind from its bytes, then parse it.

    kind = content_sniff_path(path=path, filename=name)      # or content_sniff(head=..., filename=...)
    parsed = document_parse(path=path, kind=kind, filename=name)

Every failure is a ParseError with a stable code (unsupported_type, corrupt_file, encrypted_file,
file_too_complex, empty_document); all of them are permanent.
"""
from __future__ import annotations

from pathlib import Path

from config.errors import ErrorCode
from documents.parsers.base import ParsedDocument, ParseError, Section
from documents.parsers.sniff import KINDS, SNIFF_BYTES, content_sniff, content_sniff_path

__all__ = [
    "KINDS", "SNIFF_BYTES", "ParseError", "ParsedDocument", "Section", "content_sniff", "content_sniff_path",
    "document_parse",
]


def document_parse(*, path: Path, kind: str, filename: str) -> ParsedDocument:
    """Parse a stored file of a sniffed kind into a title and sections (text, heading path, page)."""
    path = Path(path)
    if kind == "pdf":
        from documents.parsers.pdf import pdf_parse

        return pdf_parse(path=path, filename=filename)
    if kind == "docx":
        from documents.parsers.docx import docx_parse

        return docx_parse(path=path, filename=filename)
    if kind in ("txt", "md"):
        from documents.parsers.markdown import text_parse

        return text_parse(path=path, filename=filename)
    if kind == "html":
        from documents.parsers.html import html_parse

        return html_parse(path=path, filename=filename)
    if kind == "csv":
        from documents.parsers.csv import csv_parse

        return csv_parse(path=path, filename=filename)
    raise ParseError(f"Unknown document kind {kind!r}.", code=ErrorCode.UNSUPPORTED_TYPE, details={"kind": kind})
