"""The shop corpus's DOCX and PDF files, made at bench time from their Markdown sources (`faq.docx.md`, `x.pdf.md`).

Only what the virtualenv already has: python-docx for DOCX, and a small PDF writer of our own (Helvetica text in
WinAnsi encoding, wrapped lines, as many pages as needed, the first heading as the document title) — the same way the
parser tests build their fixtures. Both are deterministic, so a rerun uploads the same bytes and ingests nothing.
"""
from __future__ import annotations

import io
import re
import textwrap

_TABLE_RULE = re.compile(r"^\|?\s*:?-{2,}")


def _inline(text: str) -> str:
    """Markdown emphasis and links as plain text."""
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1 (\2)", text)
    return re.sub(r"(\*\*|__|\*|`)", "", text).strip()


def _blocks(markdown: str) -> list[tuple[str, object]]:
    """("heading", (level, text)) / ("bullet", text) / ("table", rows) / ("para", text), in order."""
    blocks: list[tuple[str, object]] = []
    paragraph: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if paragraph:
            blocks.append(("para", _inline(" ".join(paragraph))))
            paragraph.clear()
        if table:
            blocks.append(("table", [row[:] for row in table]))
            table.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if not line:
            flush()
        elif line.startswith("|"):
            if paragraph:
                blocks.append(("para", _inline(" ".join(paragraph))))
                paragraph.clear()
            if not _TABLE_RULE.match(line):
                table.append([_inline(cell) for cell in line.strip("|").split("|")])
        elif heading := re.match(r"^(#{1,6})\s+(.*)$", line):
            flush()
            blocks.append(("heading", (len(heading.group(1)), _inline(heading.group(2)))))
        elif bullet := re.match(r"^(?:[-*+]|\d+[.)])\s+(.*)$", line):
            flush()
            blocks.append(("bullet", _inline(bullet.group(1))))
        else:
            if table:
                flush()
            paragraph.append(line)
    flush()
    return blocks


def docx_from_markdown(markdown: str) -> bytes:
    import docx

    document = docx.Document()
    blocks = _blocks(markdown)
    title = next((value[1] for kind, value in blocks if kind == "heading"), "")  # type: ignore[index]
    document.core_properties.title = title
    document.core_properties.author = "bench"
    # python-docx stamps the current time by default; a fixed time keeps the bytes (and the index) the same.
    import datetime

    fixed = datetime.datetime(2026, 1, 1)
    document.core_properties.created = fixed
    document.core_properties.modified = fixed
    document.core_properties.last_printed = fixed
    for kind, value in blocks:
        if kind == "heading":
            level, text = value  # type: ignore[misc]
            document.add_heading(text, level=0 if level == 1 else min(level - 1, 4))
        elif kind == "bullet":
            document.add_paragraph(str(value), style="List Bullet")
        elif kind == "table":
            rows = value  # type: ignore[assignment]
            width = max(len(r) for r in rows)
            grid = document.add_table(rows=len(rows), cols=width)
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    grid.cell(r, c).text = cell
        else:
            document.add_paragraph(str(value))
    saved = io.BytesIO()
    document.save(saved)
    # The zip entries carry the time of saving too: rewritten with a fixed one.
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            target.writestr(zipfile.ZipInfo(item.filename, date_time=(2026, 1, 1, 0, 0, 0)), source.read(item),
                            compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _pdf_escape(text: str) -> bytes:
    text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return text.encode("cp1252", errors="replace")


def pdf_from_markdown(markdown: str) -> bytes:
    """A text PDF: headings in bold, paragraphs and bullets wrapped at 88 characters, table rows joined by " | "."""
    blocks = _blocks(markdown)
    title = next((value[1] for kind, value in blocks if kind == "heading"), "")  # type: ignore[index]
    lines: list[tuple[str, str]] = []  # (font, text); ("", "") is a blank line
    for kind, value in blocks:
        if kind == "heading":
            lines += [("", ""), ("F2", value[1])]  # type: ignore[index]
        elif kind == "bullet":
            wrapped = textwrap.wrap(str(value), 84) or [""]
            lines += [("F1", ("- " if n == 0 else "  ") + part) for n, part in enumerate(wrapped)]
        elif kind == "table":
            for row in value:  # type: ignore[attr-defined]
                lines += [("F1", part) for part in textwrap.wrap(" | ".join(row), 88) or [""]]
            lines.append(("", ""))
        else:
            lines += [("F1", part) for part in textwrap.wrap(str(value), 88)] + [("", "")]
    per_page = 52
    pages = [lines[i:i + per_page] for i in range(0, len(lines), per_page)] or [[]]

    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")
    pages_id = add(b"")
    regular = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    bold = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for page in pages:
        ops = [b"BT", b"14 TL", b"60 750 Td"]
        for font, text in page:
            if font:
                ops.append(b"/%s %d Tf" % (font.encode(), 13 if font == "F2" else 11))
                ops.append(b"(" + _pdf_escape(text) + b") Tj")
            ops.append(b"T*")
        ops.append(b"ET")
        stream = b"\n".join(ops)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> "
            b">> /Contents %d 0 R >>" % (pages_id, regular, bold, content)))
    kids = b" ".join(b"%d 0 R" % pid for pid in page_ids)
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    info = add(b"<< /Title (" + _pdf_escape(title) + b") >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, catalog, info, xref))
    return out.getvalue()
