"""PDF: the text layer of every page, with its page number; bookmarks give the heading path."""
from __future__ import annotations

import logging
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError, PdfStreamError

from config.errors import ErrorCode
from documents.parsers.base import (
    MAX_PDF_PAGES,
    ParsedDocument,
    ParseError,
    Section,
    inline_clean,
    sections_finish,
    text_clean,
    title_from_filename,
)

logger = logging.getLogger(__name__)
_MAX_OUTLINE_ITEMS = 5_000
_BORING_TITLES = ("untitled", "microsoft word -", "document", "slide 1")
# pypdf raises a wide range of exceptions on damaged files; all of them mean "cannot read this".
_DAMAGED = (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            AssertionError, RecursionError, OverflowError, ZeroDivisionError, UnicodeError)


def pdf_parse(*, path: Path, filename: str) -> ParsedDocument:
    try:
        reader = PdfReader(path, strict=False)
        _decrypt(reader)
        page_count = len(reader.pages)
    except ParseError:
        raise
    except (FileNotDecryptedError, DependencyError):
        raise _encrypted() from None
    except _DAMAGED as exc:
        raise ParseError("The PDF is damaged and cannot be read.", code=ErrorCode.CORRUPT_FILE,
                         details={"reason": type(exc).__name__}) from None
    if page_count > MAX_PDF_PAGES:
        raise ParseError(f"The PDF has {page_count} pages; we index at most {MAX_PDF_PAGES} per file.",
                         code=ErrorCode.FILE_TOO_COMPLEX, details={"pages": page_count, "limit": MAX_PDF_PAGES})
    headings = _outline_by_page(reader)
    sections: list[Section] = []
    failed_pages = 0
    current_path: list[str] = []
    for index in range(page_count):
        first_on_page, last_on_page = headings.get(index, (current_path, current_path))
        try:
            text = text_clean(reader.pages[index].extract_text() or "")
        except FileNotDecryptedError:
            raise _encrypted() from None
        except _DAMAGED:
            failed_pages += 1
            current_path = last_on_page
            continue
        sections.append(Section(text=text, heading_path=list(first_on_page), page=index + 1))
        current_path = last_on_page
    if failed_pages and failed_pages == page_count:
        raise ParseError("The PDF is damaged and cannot be read.", code=ErrorCode.CORRUPT_FILE,
                         details={"reason": "no page could be read"})
    if not any(section.text for section in sections):
        raise ParseError("This PDF has no text layer (a scan?). Run it through OCR and upload the result.",
                         code=ErrorCode.EMPTY_DOCUMENT, details={"pages": page_count, "reason": "no_text_layer"})
    notes = [f"{failed_pages} damaged page(s) were skipped."] if failed_pages else []
    return sections_finish(sections, title=_title(reader) or title_from_filename(filename), notes=notes)


def _decrypt(reader: PdfReader) -> None:
    """Files that are only owner-protected (empty user password) open; anything else is refused."""
    if not reader.is_encrypted:
        return
    if not reader.decrypt(""):
        raise _encrypted()


def _encrypted() -> ParseError:
    return ParseError("The PDF is password-protected. Remove the password and upload it again.",
                      code=ErrorCode.ENCRYPTED_FILE)


def _title(reader: PdfReader) -> str:
    try:
        title = inline_clean(str((reader.metadata or {}).get("/Title") or ""))
    except _DAMAGED:
        return ""
    if len(title) < 3 or title.lower().startswith(_BORING_TITLES):
        return ""
    return title


def _outline_by_page(reader: PdfReader) -> dict[int, tuple[list[str], list[str]]]:
    """Page index -> (path of the first bookmark on it, path of the last one), in document order.

    Bookmarks are optional and often broken; whatever cannot be read is skipped.
    """
    found: dict[int, tuple[list[str], list[str]]] = {}
    try:
        outline = reader.outline
    except _DAMAGED:
        return found
    seen = 0
    # An outline is a list of items where a nested list holds the children of the item before it.
    # Walk it in document order without recursion: a stack of (iterator, path of the enclosing item).
    stack: list[tuple[object, list[str]]] = [(iter(outline), [])]
    last_title_at_depth: list[str | None] = [None]
    while stack and seen < _MAX_OUTLINE_ITEMS:
        items, path = stack[-1]
        item = next(items, None)  # type: ignore[call-overload]
        if item is None:
            stack.pop()
            last_title_at_depth.pop()
            continue
        seen += 1
        if isinstance(item, list):
            parent = last_title_at_depth[-1]
            stack.append((iter(item), path + [parent] if parent else path))
            last_title_at_depth.append(None)
            continue
        try:
            title = inline_clean(str(item.title or ""), 200)
            page = reader.get_destination_page_number(item)
        except _DAMAGED:
            continue
        last_title_at_depth[-1] = title or None
        if title and page is not None and page >= 0:
            first, _last = found.get(page, (path + [title], path + [title]))
            found[page] = (first, path + [title])
    return found
