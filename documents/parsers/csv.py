"""CSV: one section per record, rendered as "column: value; ..."; the dialect is sniffed, rows are capped."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from config.errors import ErrorCode
from documents.parsers.base import (
    CSV_MAX_FIELD_CHARS,
    CSV_MAX_ROWS,
    ParsedDocument,
    ParseError,
    Section,
    bytes_decode,
    inline_clean,
    sections_finish,
    title_from_filename,
)

_SAMPLE_CHARS = 64 * 1024


def csv_parse(*, path: Path, filename: str) -> ParsedDocument:
    text = bytes_decode(path.read_bytes()).replace("\x00", "")
    dialect = _dialect(text[:_SAMPLE_CHARS], filename)
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    sections: list[Section] = []
    header: list[str] | None = None
    truncated = False
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if any(len(cell) > CSV_MAX_FIELD_CHARS for cell in row):
                raise ParseError("A field of this CSV file is too large to index.", code=ErrorCode.FILE_TOO_COMPLEX,
                                 details={"line": reader.line_num, "limit": CSV_MAX_FIELD_CHARS})
            if header is None:
                header = [inline_clean(name, 100) or f"column {i + 1}" for i, name in enumerate(row)]
                continue
            if len(sections) >= CSV_MAX_ROWS:
                truncated = True
                break
            record = len(sections) + 1
            sections.append(Section(text=_render(header, row), heading_path=[f"Row {record}"]))
    except csv.Error as exc:
        raise ParseError("The CSV file is malformed.", code=ErrorCode.CORRUPT_FILE,
                         details={"line": reader.line_num, "reason": str(exc)[:200]}) from None
    notes = [f"Only the first {CSV_MAX_ROWS:,} rows were imported."] if truncated else []
    return sections_finish(sections, title=title_from_filename(filename), notes=notes)


def _dialect(sample: str, filename: str) -> type[csv.Dialect] | csv.Dialect:
    if filename.lower().endswith(".tsv"):
        return csv.excel_tab
    try:
        # Cut the sample at a line end so the sniffer does not see half a record.
        cut = sample.rfind("\n")
        return csv.Sniffer().sniff(sample[:cut] if cut > 0 else sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _render(header: list[str], row: list[str]) -> str:
    pairs = []
    for index, value in enumerate(row):
        value = inline_clean(value, CSV_MAX_FIELD_CHARS)
        if not value:
            continue
        name = header[index] if index < len(header) else f"column {index + 1}"
        pairs.append(f"{name}: {value}")
    return "; ".join(pairs)
