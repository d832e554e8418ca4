"""What every parser returns, the error they raise, and the cleaning and limits they share."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import ApplicationError, ErrorCode

# Limits that keep a hostile file from taking the worker down. A file over them fails with file_too_complex.
MAX_TEXT_CHARS = 30_000_000  # extracted text of one document
MAX_PDF_PAGES = 5_000
MAX_HTML_BYTES = 10 * 1024 * 1024  # lxml builds a tree about ten times the input's size
MAX_HTML_DEPTH = 200  # libxml2 silently drops what lies deeper than 255; real pages stay far below
MAX_HTML_ELEMENTS = 500_000
DOCX_MAX_UNCOMPRESSED = 200 * 1024 * 1024  # all members together
DOCX_MAX_MEMBER = 60 * 1024 * 1024  # one member, e.g. word/document.xml
DOCX_MAX_RATIO = 150  # uncompressed / compressed of a member larger than DOCX_RATIO_FLOOR
DOCX_RATIO_FLOOR = 1024 * 1024
DOCX_MAX_MEMBERS = 10_000
CSV_MAX_ROWS = 50_000
CSV_MAX_FIELD_CHARS = 131_072


class ParseError(ApplicationError):
    """The content cannot be turned into text. Permanent: retrying the same bytes gives the same answer."""

    status_code = 422
    default_code = ErrorCode.CORRUPT_FILE
    permanent = True


@dataclass(frozen=True)
class Section:
    text: str
    heading_path: list[str] = field(default_factory=list)
    page: int | None = None


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]
    # Things a person should know about the result, e.g. "Only the first 50,000 rows were imported."
    notes: list[str] = field(default_factory=list)

    @property
    def text_length(self) -> int:
        return sum(len(section.text) for section in self.sections)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def text_clean(text: str, *, keep_indent: bool = False) -> str:
    """Normalise newlines, drop control characters (PostgreSQL refuses NUL) and runs of blank lines.

    Runs of spaces become one, unless keep_indent (Markdown, code), which only trims line ends.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text).replace("\u00a0", " ")
    if keep_indent:
        text = "\n".join(line.rstrip() for line in text.split("\n"))
    else:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip("\n").rstrip()


def inline_clean(text: str, limit: int = 300) -> str:
    """A heading or a title: one line, no control characters, bounded."""
    return _SPACES.sub(" ", _CONTROL.sub("", text.replace("\n", " ").replace("\r", " "))).strip()[:limit]


def title_from_filename(filename: str) -> str:
    stem = Path(filename or "").name
    if "." in stem.strip("."):
        stem = stem.rsplit(".", 1)[0]
    return inline_clean(re.sub(r"[_]+", " ", stem)) or "Untitled"


def sections_finish(sections: list[Section], *, title: str, notes: list[str] | None = None) -> ParsedDocument:
    """Drop empty sections, enforce the text limit, refuse a document with nothing left."""
    kept = [s for s in sections if s.text]
    total = sum(len(s.text) for s in kept)
    if total > MAX_TEXT_CHARS:
        raise ParseError(
            "This document holds more text than we index from one file; split it into smaller files.",
            code=ErrorCode.FILE_TOO_COMPLEX,
            details={"characters": total, "limit": MAX_TEXT_CHARS},
        )
    if not kept:
        raise ParseError("No text was found in this document.", code=ErrorCode.EMPTY_DOCUMENT)
    return ParsedDocument(title=inline_clean(title) or "Untitled", sections=kept, notes=list(notes or []))


def heading_stack_push(stack: list[tuple[int, str]], level: int, text: str) -> None:
    """Keep the chain of open headings: a heading closes every heading of its level or deeper."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, text))


def bytes_decode(data: bytes) -> str:
    """Text files: BOM first, then UTF-8, then Windows-1252 (what 8-bit text files mostly are)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
