"""DOCX: paragraphs and tables in order; heading styles give the heading path. Zip bombs are refused unopened."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml.etree import LxmlError

from config.errors import ErrorCode
from documents.parsers.base import (
    DOCX_MAX_MEMBER,
    DOCX_MAX_MEMBERS,
    DOCX_MAX_RATIO,
    DOCX_MAX_UNCOMPRESSED,
    DOCX_RATIO_FLOOR,
    ParsedDocument,
    ParseError,
    Section,
    heading_stack_push,
    inline_clean,
    sections_finish,
    text_clean,
    title_from_filename,
)

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


def docx_archive_check(path: Path) -> None:
    """Refuse archives that would expand beyond our limits, judging by the central directory only."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > DOCX_MAX_MEMBERS:
                raise _too_complex("too many parts", members=len(members))
            total = 0
            for member in members:
                total += member.file_size
                if member.file_size > DOCX_MAX_MEMBER:
                    raise _too_complex("a part is too large", part=member.filename[:200], size=member.file_size)
                ratio = member.file_size / max(member.compress_size, 1)
                if member.file_size > DOCX_RATIO_FLOOR and ratio > DOCX_MAX_RATIO:
                    raise _too_complex("a part is compressed suspiciously well (zip bomb?)",
                                       part=member.filename[:200], ratio=round(ratio))
            if total > DOCX_MAX_UNCOMPRESSED:
                raise _too_complex("the document expands too much", size=total)
            if "word/document.xml" not in archive.namelist():
                raise ParseError("This ZIP file is not a Word document.", code=ErrorCode.CORRUPT_FILE)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ParseError("The Word document is damaged and cannot be read.", code=ErrorCode.CORRUPT_FILE) from None


def _too_complex(reason: str, **details: object) -> ParseError:
    return ParseError(f"This Word document cannot be indexed: {reason}.", code=ErrorCode.FILE_TOO_COMPLEX,
                      details={"reason": reason, **details})


def docx_parse(*, path: Path, filename: str) -> ParsedDocument:
    docx_archive_check(path)
    try:
        document = docx.Document(str(path))
        title = inline_clean(document.core_properties.title or "")
        blocks = list(document.iter_inner_content())
    except (PackageNotFoundError, KeyError, ValueError, LxmlError, zipfile.BadZipFile, AttributeError):
        raise ParseError("The Word document is damaged and cannot be read.", code=ErrorCode.CORRUPT_FILE) from None

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []
    first_heading = ""

    def flush() -> None:
        if lines:
            sections.append(Section(text=text_clean("\n".join(lines)), heading_path=[t for _, t in stack]))
            lines.clear()

    for block in blocks:
        if isinstance(block, Table):
            lines.extend(_table_lines(block))
            continue
        if not isinstance(block, Paragraph):
            continue
        text = block.text
        level = _heading_level(block)
        if level is None:
            if text.strip():
                lines.append(text)
            continue
        heading = inline_clean(text, 200)
        if not heading:
            continue
        if level == 0:  # the Title style
            title = title or heading
            continue
        first_heading = first_heading or heading
        flush()
        heading_stack_push(stack, level, heading)
    flush()
    return sections_finish(sections, title=title or first_heading or title_from_filename(filename))


def _heading_level(paragraph: Paragraph) -> int | None:
    try:
        name = (paragraph.style.name if paragraph.style is not None else "") or ""
    except (KeyError, ValueError, AttributeError):
        return None
    if name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(name.strip())
    return int(match.group(1)) if match else None


def _table_lines(table: Table) -> list[str]:
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = inline_clean(cell.text, 2000)
            if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                cells.append(text)
        if cells:
            lines.append(" | ".join(cells))
    return lines
