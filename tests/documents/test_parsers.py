"""Content sniffing and parsing of every supported kind, and of the hostile files the issue lists."""
from __future__ import annotations

import io
import random
import struct
import zipfile
from pathlib import Path

import pytest

from config.errors import ApplicationError
from documents.parsers import (
    SNIFF_BYTES,
    ParsedDocument,
    ParseError,
    content_sniff,
    content_sniff_path,
    document_parse,
)
from documents.parsers.base import CSV_MAX_ROWS, MAX_HTML_BYTES
from tests.documents.fixtures.make_fixtures import docx_bytes, pdf_bytes

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def parse_bytes(tmp_path: Path, data: bytes, filename: str) -> ParsedDocument:
    path = tmp_path / "upload"
    path.write_bytes(data)
    kind = content_sniff_path(path=path, filename=filename)
    return document_parse(path=path, kind=kind, filename=filename)


def parse_error(tmp_path: Path, data: bytes, filename: str) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_bytes(tmp_path, data, filename)
    return caught.value


def fixture_error(name: str) -> ParseError:
    path = FIXTURES / name
    with pytest.raises(ParseError) as caught:
        document_parse(path=path, kind=content_sniff_path(path=path, filename=name), filename=name)
    return caught.value


# --- sniffing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("head", "filename", "kind"),
    [
        (b"%PDF-1.7\n...", "manual.bin", "pdf"),
        (b"# Title\n\nSome *markdown*.", "notes.md", "md"),
        (b"# Title\n\nSome text.", "notes.markdown", "md"),
        (b"a,b\n1,2\n", "table.csv", "csv"),
        (b"a\tb\n1\t2\n", "table.tsv", "csv"),
        (b"<p>hello</p>", "page.htm", "html"),
        (b"  <!DOCTYPE html><html><body>hi</body></html>", "download", "html"),
        (b"just words", "readme", "txt"),
        (b"just words", "notes.txt", "txt"),
        ("Caf\u00e9 cr\u00e8me".encode("cp1252"), "menu.txt", "txt"),  # legacy 8-bit text
        ("\ufeffh\u00e9llo".encode("utf-16"), "wide.txt", "txt"),
        ("na\u00efve ".encode() * 10 + "\u00e9".encode()[:1], "cut.txt", "txt"),  # head ends inside a character
        (b"This note explains the %PDF- header of PDF files.", "about.txt", "txt"),
    ],
)
def test_sniff_decides_from_content(head: bytes, filename: str, kind: str) -> None:
    assert content_sniff(head=head, filename=filename) == kind


def test_sniff_finds_docx_by_its_document_part() -> None:
    data = docx_bytes()
    assert content_sniff(head=data[:SNIFF_BYTES], filename="anything.bin") == "docx"


def test_sniff_path_reads_the_zip_directory_when_the_part_is_far_into_the_file(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("customXml/padding.bin", random.Random(1).randbytes(SNIFF_BYTES * 2))
        with zipfile.ZipFile(io.BytesIO(docx_bytes())) as source:
            for item in source.infolist():
                archive.writestr(item.filename, source.read(item.filename))
    path = tmp_path / "late.docx"
    path.write_bytes(out.getvalue())
    assert b"word/document.xml" not in out.getvalue()[:SNIFF_BYTES]
    assert content_sniff_path(path=path, filename="late.docx") == "docx"


@pytest.mark.parametrize(
    ("fixture", "detected"),
    [("image.pdf", "image/png"), ("program.txt", "application/x-executable"),
     ("windows.txt", "application/x-msdownload")],
)
def test_sniff_refuses_files_that_lie_about_their_type(fixture: str, detected: str) -> None:
    head = (FIXTURES / fixture).read_bytes()[:SNIFF_BYTES]
    with pytest.raises(ParseError) as caught:
        content_sniff(head=head, filename=fixture)
    assert caught.value.code == "unsupported_type"
    assert caught.value.details["detected"] == detected
    assert caught.value.status_code == 415


def test_sniff_refuses_binary_garbage_and_plain_zip_archives() -> None:
    garbage = random.Random(7).randbytes(4096)
    with pytest.raises(ParseError) as caught:
        content_sniff(head=garbage, filename="notes.txt")
    assert caught.value.code == "unsupported_type"

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photos/a.txt", "not a word document")
    with pytest.raises(ParseError) as caught:
        content_sniff(head=out.getvalue(), filename="report.docx")
    assert caught.value.code == "unsupported_type"


@pytest.mark.parametrize("head", [b"", b"   \n\t  "])
def test_sniff_reports_an_empty_file(head: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        content_sniff(head=head, filename="empty.txt")
    assert caught.value.code == "empty_document"


def test_parse_errors_are_permanent_application_errors() -> None:
    error = fixture_error("encrypted.pdf")
    assert isinstance(error, ApplicationError)
    assert error.permanent is True
    assert error.as_dict()["error"]["code"] == "encrypted_file"


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_text("hello")
    with pytest.raises(ParseError) as caught:
        document_parse(path=path, kind="xlsx", filename="x.xlsx")
    assert caught.value.code == "unsupported_type"


# --- PDF -----------------------------------------------------------------------------------------------------

def test_pdf_text_per_page_with_page_numbers_bookmarks_and_title() -> None:
    parsed = document_parse(path=FIXTURES / "guide.pdf", kind="pdf", filename="guide.pdf")
    assert parsed.title == "Acme User Guide"
    assert [section.page for section in parsed.sections] == [1, 2, 3]
    assert "Install the app from the store." in parsed.sections[0].text
    assert "Invoices are sent" in parsed.sections[1].text
    assert [section.heading_path for section in parsed.sections] == [["Getting started"], ["Billing"], ["Billing"]]


def test_pdf_title_falls_back_to_the_file_name(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, pdf_bytes(["Only page"]), "Quarterly_report-2024.pdf")
    assert parsed.title == "Quarterly report-2024"
    assert parsed.sections[0].heading_path == []


def test_pdf_encrypted_with_a_password_is_refused() -> None:
    assert fixture_error("encrypted.pdf").code == "encrypted_file"


def test_pdf_protected_only_against_editing_is_read(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(FIXTURES / "guide.pdf"))
    writer.encrypt(user_password="", owner_password="owner-only", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    parsed = parse_bytes(tmp_path, out.getvalue(), "owner-protected.pdf")
    assert "Invoices are sent" in parsed.sections[1].text


def test_pdf_corrupt_and_truncated_are_refused(tmp_path: Path) -> None:
    assert fixture_error("corrupt.pdf").code == "corrupt_file"
    whole = (FIXTURES / "guide.pdf").read_bytes()
    assert parse_error(tmp_path, whole[:200], "cut.pdf").code == "corrupt_file"


def test_pdf_without_a_text_layer_is_empty() -> None:
    error = fixture_error("scanned.pdf")
    assert error.code == "empty_document"
    assert error.details["reason"] == "no_text_layer"


def test_png_named_pdf_never_reaches_the_pdf_parser() -> None:
    assert fixture_error("image.pdf").code == "unsupported_type"


# --- DOCX ----------------------------------------------------------------------------------------------------

def test_docx_headings_tables_and_title() -> None:
    parsed = document_parse(path=FIXTURES / "returns.docx", kind="docx", filename="returns.docx")
    assert parsed.title == "Returns Handbook"
    paths = [section.heading_path for section in parsed.sections]
    assert paths == [[], ["Refunds"], ["Refunds", "Card payments"], ["Exchanges"]]
    card = parsed.sections[2].text
    assert "Card refunds go back" in card
    assert "Method | Days" in card and "Visa | 5" in card
    assert all(section.page is None for section in parsed.sections)


def test_docx_zip_bomb_is_refused() -> None:
    error = fixture_error("bomb.docx")
    assert error.code == "file_too_complex"
    assert error.details["part"] == "word/media/padding.bin"


def _with_declared_size(data: bytes, member: str, size: int) -> bytes:
    """Rewrite the central directory so `member` claims `size` uncompressed bytes (its data stays as it is)."""
    buffer = bytearray(data)
    position = buffer.find(b"PK\x01\x02")
    while position != -1:
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", buffer, position + 28)
        name = bytes(buffer[position + 46:position + 46 + name_length]).decode()
        if name == member:
            struct.pack_into("<I", buffer, position + 24, size)
        position = buffer.find(b"PK\x01\x02", position + 46 + name_length + extra_length + comment_length)
    return bytes(buffer)


def test_docx_sizes_are_checked_before_anything_is_extracted(tmp_path: Path) -> None:
    # The directory claims 4 GB; extracting would fail on the data instead (CRC, size mismatch).
    data = _with_declared_size(docx_bytes(), "word/document.xml", 0xFFFF0000)
    error = parse_error(tmp_path, data, "liar.docx")
    assert error.code == "file_too_complex"
    assert error.details["part"] == "word/document.xml"


def test_docx_damaged_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx_bytes())) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            body = b"<w:document><w:body><w:p>unclosed" if item.filename == "word/document.xml" else source.read(item)
            target.writestr(item.filename, body)
    assert parse_error(tmp_path, out.getvalue(), "broken.docx").code == "corrupt_file"
    assert parse_error(tmp_path, docx_bytes()[:3000], "cut.docx").code in ("corrupt_file", "unsupported_type")


def test_docx_with_no_text_is_empty(tmp_path: Path) -> None:
    import docx

    out = io.BytesIO()
    docx.Document().save(out)
    assert parse_error(tmp_path, out.getvalue(), "blank.docx").code == "empty_document"


# --- TXT and Markdown ----------------------------------------------------------------------------------------

MARKDOWN = """---
title: "Shipping FAQ"
---
Intro before any heading.

# Shipping

We ship worldwide.

## Costs

Standard shipping is free.

```bash
# not a heading: a comment in code
echo hi
```

### Express

Express costs 10 EUR.

Returns
-------

Send it back within 30 days.
"""


def test_markdown_heading_paths_front_matter_and_code_blocks(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, MARKDOWN.encode(), "faq.md")
    assert parsed.title == "Shipping FAQ"
    by_path = {" > ".join(s.heading_path): s.text for s in parsed.sections}
    assert by_path[""] == "Intro before any heading."
    assert by_path["Shipping"] == "We ship worldwide."
    assert "# not a heading: a comment in code" in by_path["Shipping > Costs"]
    assert by_path["Shipping > Costs > Express"] == "Express costs 10 EUR."
    assert by_path["Shipping > Returns"] == "Send it back within 30 days."


def test_markdown_first_top_heading_is_the_title(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, b"# Router Manual\n\nPlug it in.\n\n## Reset\n\nHold the button.\n", "r.md")
    assert parsed.title == "Router Manual"
    assert [s.heading_path for s in parsed.sections] == [[], ["Reset"]]


def test_text_file_is_cleaned_and_titled_from_its_name(tmp_path: Path) -> None:
    data = b"Line one\r\nLine\x00 two\x07\r\n\r\n\r\n\r\nLine three"
    parsed = parse_bytes(tmp_path, data, "opening_hours.txt")
    assert parsed.title == "opening hours"
    assert parsed.sections[0].text == "Line one\nLine two\n\nLine three"


def test_text_in_windows_1252_is_decoded(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, "Caf\u00e9 \u20ac5".encode("cp1252"), "menu.txt")
    assert parsed.sections[0].text == "Caf\u00e9 \u20ac5"


def test_text_with_only_whitespace_and_headings_is_empty(tmp_path: Path) -> None:
    assert parse_error(tmp_path, b"# Title\n\n## Nothing\n\n   \n", "x.md").code == "empty_document"


# --- HTML ----------------------------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><title>Help Center - Acme</title>
<style>body { color: red }</style><script>var tracking = "SECRET_SCRIPT";</script></head>
<body>
<header><a href="/">Acme</a> <span>SITE_BANNER</span></header>
<nav><ul><li>NAV_LINK_ONE</li><li>NAV_LINK_TWO</li></ul></nav>
<div role="navigation">ROLE_NAV</div>
<ul class="docnav top"><li>Prev</li><li>DOCNAV_HOME</li></ul>
<main>
  <article>
    <header><h1>Help Center</h1></header>
    <p>Welcome to the help center.</p>
    <h2>Orders</h2>
    <p>Track your order in <b>My account</b>.</p>
    <ul><li>Open the app</li><li>Tap Orders</li></ul>
    <h3>Cancelling</h3>
    <p>Cancel within one hour.</p>
    <div class="sidebar"><p class="title">TIP</p><p>Refunds follow automatically.</p></div>
    <form><input name="q"><button>SEARCH_BUTTON</button></form>
    <div hidden>HIDDEN_TEXT</div>
    <h2>Payments</h2>
    <table><tr><th>Card</th><th>Fee</th></tr><tr><td>Visa</td><td>0</td></tr></table>
    <pre>code   keeps   spacing</pre>
  </article>
  <aside>RELATED_ASIDE</aside>
</main>
<footer>FOOTER_TEXT</footer>
</body></html>"""


def test_html_boilerplate_removed_headings_kept(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, PAGE, "help.html")
    text = "\n".join(section.text for section in parsed.sections)
    for boilerplate in ("SECRET_SCRIPT", "color: red", "SITE_BANNER", "NAV_LINK", "ROLE_NAV", "SEARCH_BUTTON",
                        "DOCNAV_HOME", "HIDDEN_TEXT", "RELATED_ASIDE", "FOOTER_TEXT"):
        assert boilerplate not in text
    assert parsed.title == "Help Center - Acme"
    by_path = {" > ".join(s.heading_path): s.text for s in parsed.sections}
    assert by_path["Help Center"] == "Welcome to the help center."
    assert "Track your order in My account." in by_path["Help Center > Orders"]
    assert "- Open the app" in by_path["Help Center > Orders"]
    cancelling = by_path["Help Center > Orders > Cancelling"]
    assert cancelling == "Cancel within one hour.\n\nTIP\n\nRefunds follow automatically."  # a DocBook TIP box
    assert "Card | Fee" in by_path["Help Center > Payments"]
    assert "code   keeps   spacing" in by_path["Help Center > Payments"]


def test_html_charset_from_meta(tmp_path: Path) -> None:
    page = '<html><head><meta charset="windows-1252"></head><body><p>Caf\u00e9 \u20ac</p></body></html>'
    parsed = parse_bytes(tmp_path, page.encode("cp1252"), "menu.html")
    assert parsed.sections[0].text == "Caf\u00e9 \u20ac"


def test_html_utf8_without_declaration(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, "<p>Gr\u00fc\u00dfe aus K\u00f6ln</p>".encode(), "page.html")
    assert parsed.sections[0].text == "Gr\u00fc\u00dfe aus K\u00f6ln"


def test_html_deeply_nested_is_refused_without_recursion(tmp_path: Path) -> None:
    page = b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body></html>"
    error = parse_error(tmp_path, page, "deep.html")
    assert error.code == "file_too_complex"
    assert error.details["reason"] == "the page is nested too deeply"


def test_html_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    page = b"<html><body>" + b"<p>words words words</p>" * (MAX_HTML_BYTES // 24 + 10) + b"</body></html>"
    assert len(page) > MAX_HTML_BYTES
    error = parse_error(tmp_path, page, "huge.html")
    assert error.code == "file_too_complex"
    assert error.details["reason"] == "the page is too large"


def test_html_with_too_many_elements_is_refused(tmp_path: Path) -> None:
    page = b"<html><body>" + b"<i></i>" * 600_000 + b"</body></html>"
    assert len(page) < MAX_HTML_BYTES
    error = parse_error(tmp_path, page, "many.html")
    assert error.code == "file_too_complex"
    assert error.details["reason"] == "the page has too many elements"


def test_html_with_nothing_but_chrome_is_empty(tmp_path: Path) -> None:
    page = b"<html><body><nav>Home</nav><script>x()</script><footer>(c) Acme</footer></body></html>"
    assert parse_error(tmp_path, page, "chrome.html").code == "empty_document"


# --- CSV -----------------------------------------------------------------------------------------------------

def test_csv_one_section_per_row(tmp_path: Path) -> None:
    data = b'question,answer,notes\n"How do I pay?","By card, or by invoice",\n"Multi\nline?",yes,see FAQ\n'
    parsed = parse_bytes(tmp_path, data, "faq.csv")
    assert parsed.title == "faq"
    assert [s.text for s in parsed.sections] == [
        "question: How do I pay?; answer: By card, or by invoice",
        "question: Multi line?; answer: yes; notes: see FAQ",
    ]
    assert [s.heading_path for s in parsed.sections] == [["Row 1"], ["Row 2"]]


def test_csv_dialect_is_sniffed(tmp_path: Path) -> None:
    parsed = parse_bytes(tmp_path, b"name;price\nTea;3,50\nCake;4,20\n", "prices.csv")
    assert parsed.sections[0].text == "name: Tea; price: 3,50"
    parsed = parse_bytes(tmp_path, b"name\tprice\nTea\t3.50\n", "prices.tsv")
    assert parsed.sections[0].text == "name: Tea; price: 3.50"


def test_csv_rows_are_capped(tmp_path: Path) -> None:
    rows = "".join(f"{n},item {n}\n" for n in range(CSV_MAX_ROWS + 25))
    parsed = parse_bytes(tmp_path, ("id,name\n" + rows).encode(), "items.csv")
    assert len(parsed.sections) == CSV_MAX_ROWS
    assert parsed.sections[-1].text == f"id: {CSV_MAX_ROWS - 1}; name: item {CSV_MAX_ROWS - 1}"
    assert parsed.notes == [f"Only the first {CSV_MAX_ROWS:,} rows were imported."]


def test_csv_with_only_a_header_is_empty(tmp_path: Path) -> None:
    assert parse_error(tmp_path, b"a,b,c\n\n", "empty.csv").code == "empty_document"
