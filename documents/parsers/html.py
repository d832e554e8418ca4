"""HTML: the page's own content, with h1-h6 as the heading path; navigation, scripts, forms and the like dropped.

lxml (libxml2) parses without Python recursion; we walk the tree with an explicit stack, and refuse pages
that are too large, too deep or have too many elements before they cost much.
"""
from __future__ import annotations

import re
from pathlib import Path

import lxml.html
from lxml import etree

from config.errors import ErrorCode
from documents.parsers.base import (
    MAX_HTML_BYTES,
    MAX_HTML_DEPTH,
    MAX_HTML_ELEMENTS,
    ParsedDocument,
    ParseError,
    Section,
    heading_stack_push,
    inline_clean,
    sections_finish,
    text_clean,
    title_from_filename,
)

# Dropped with everything inside them.
_BOILERPLATE_TAGS = {
    "script", "style", "noscript", "template", "nav", "aside", "form", "iframe", "svg", "canvas", "button",
    "select", "input", "textarea", "object", "embed", "video", "audio", "map", "dialog", "menu",
}
_PAGE_CHROME_TAGS = {"header", "footer"}  # the site's banner and footer; kept inside article/main/section
_BOILERPLATE_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"}
# Class names and ids of navigation blocks in generated documentation and common site themes (DocBook, Publican,
# Sphinx, MkDocs, WordPress), matched as whole words.
_BOILERPLATE_NAMES = {  # not "sidebar" or "related": DocBook's sidebars are TIP and NOTE boxes, i.e. content
    "docnav", "navheader", "navfooter", "breadcrumb", "breadcrumbs", "sphinxsidebar", "banner", "site-header",
    "site-footer", "skip-link", "skiplink", "cookie-banner", "cookie-notice", "md-sidebar", "md-header",
    "md-footer", "wy-nav-side", "rst-versions",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {
    "p", "div", "section", "article", "main", "ul", "ol", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot",
    "tr", "blockquote", "pre", "figure", "figcaption", "caption", "address", "details", "summary", "hr", "body",
    "center", "fieldset", "legend",
}
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def html_parse(*, path: Path, filename: str) -> ParsedDocument:
    size = path.stat().st_size
    if size > MAX_HTML_BYTES:
        raise _too_complex("the page is too large", size=size, limit=MAX_HTML_BYTES)
    return html_sections(path.read_bytes(), filename=filename)


def html_sections(data: bytes, *, filename: str) -> ParsedDocument:
    parser = lxml.html.HTMLParser(encoding=_encoding(data), remove_comments=True, remove_pis=True,
                                  no_network=True, huge_tree=False)
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        raise ParseError("No text was found in this page.", code=ErrorCode.EMPTY_DOCUMENT) from None
    _check_shape(root)
    title = inline_clean(root.findtext(".//title") or "")
    _drop_boilerplate(root)
    content = _main_content(root)
    sections, first_h1 = _walk(content)
    return sections_finish(sections, title=title or first_h1 or title_from_filename(filename))


def _too_complex(reason: str, **details: object) -> ParseError:
    return ParseError(f"This page cannot be indexed: {reason}.", code=ErrorCode.FILE_TOO_COMPLEX,
                      details={"reason": reason, **details})


def _encoding(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    match = _CHARSET.search(data[:4096])
    if match:
        name = match.group(1).decode("ascii", "ignore").lower()
        if name not in ("utf-16", "utf-16le", "utf-16be"):  # a page that says so in ASCII is not UTF-16
            try:
                "".encode(name)
                return name
            except LookupError:
                pass
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "windows-1252"


def _check_shape(root: etree._Element) -> None:
    """Too many elements or nesting deeper than real pages have (libxml2 silently cuts at 255)."""
    count = 0
    stack = [(root, 0)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if count > MAX_HTML_ELEMENTS:
            raise _too_complex("the page has too many elements", limit=MAX_HTML_ELEMENTS)
        if depth > MAX_HTML_DEPTH:
            raise _too_complex("the page is nested too deeply", limit=MAX_HTML_DEPTH)
        stack.extend((child, depth + 1) for child in element)


def _drop_boilerplate(root: etree._Element) -> None:
    doomed = []
    for element in root.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        role = (element.get("role") or "").strip().lower()
        if (
            tag in _BOILERPLATE_TAGS
            or role in _BOILERPLATE_ROLES
            or element.get("hidden") is not None
            or (element.get("aria-hidden") or "").lower() == "true"
            or _named_boilerplate(element)
            or not isinstance(element.tag, str)  # comments, processing instructions
            or (tag in _PAGE_CHROME_TAGS and not _inside_content(element))
        ):
            doomed.append(element)
    for element in doomed:
        parent = element.getparent()
        if parent is not None:
            element.drop_tree()  # keeps the element's tail text in the parent


def _named_boilerplate(element: etree._Element) -> bool:
    names = set((element.get("class") or "").lower().split())
    names.add((element.get("id") or "").lower())
    return not names.isdisjoint(_BOILERPLATE_NAMES)


def _inside_content(element: etree._Element) -> bool:
    parent = element.getparent()
    while parent is not None:
        if parent.tag in ("article", "main", "section") or (parent.get("role") or "").lower() == "main":
            return True
        parent = parent.getparent()
    return False


def _main_content(root: etree._Element) -> etree._Element:
    """The page's <main> (or role=main, or its only <article>) when it has one; else the whole body."""
    mains = root.xpath("//main | //*[@role='main']")
    if len(mains) == 1 and _WHITESPACE.sub("", mains[0].text_content()):
        return mains[0]
    articles = root.xpath("//article")
    if len(articles) == 1 and _WHITESPACE.sub("", articles[0].text_content()):
        return articles[0]
    body = root.find("body")
    return body if body is not None else root


def _walk(content: etree._Element) -> tuple[list[Section], str]:
    """Document-order walk with an explicit stack, splitting the text into sections at headings."""
    sections: list[Section] = []
    stack_headings: list[tuple[int, str]] = []
    parts: list[str] = []
    first_h1 = ""

    def flush() -> None:
        text = _parts_text(parts)
        if text:
            sections.append(Section(text=text, heading_path=[t for _, t in stack_headings]))
        parts.clear()

    # Work items: an element to open, or a string to append (closing text and tails).
    work: list[etree._Element | str] = [content]
    while work:
        item = work.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        tag = item.tag if isinstance(item.tag, str) else ""
        if tag in _HEADINGS:
            heading = inline_clean(item.text_content(), 200)
            if heading:
                flush()
                level = _HEADINGS[tag]
                if level == 1 and not first_h1:
                    first_h1 = heading
                heading_stack_push(stack_headings, level, heading)
            parts.append("\n")
            continue
        if tag == "pre":
            parts.append(_Preformatted(item.text_content()))
            continue
        closing = _closing(tag)
        parts.append(_opening(tag, item))
        parts.append(_WHITESPACE.sub(" ", item.text or ""))
        # Push in reverse so children come out in order, each followed by its tail.
        work.append(closing)
        for child in reversed(item):
            if child.tail:
                work.append(_WHITESPACE.sub(" ", child.tail))
            work.append(child)
    flush()
    return sections, first_h1


class _Preformatted(str):
    """Text of a <pre>: its spacing is kept."""


def _parts_text(parts: list[str]) -> str:
    out: list[str] = []
    flowing: list[str] = []
    for part in parts:
        if isinstance(part, _Preformatted):
            out.append(text_clean("".join(flowing)))
            flowing.clear()
            out.append(text_clean(part, keep_indent=True))
        else:
            flowing.append(part)
    out.append(text_clean("".join(flowing)))
    return text_clean("\n\n".join(piece for piece in out if piece), keep_indent=True)


def _opening(tag: str, item: etree._Element) -> str:
    if tag == "li":
        return "\n- "
    if tag in ("td", "th"):
        return " | " if item.getprevious() is not None else ""
    if tag == "br":
        return "\n"
    if tag in _BLOCKS:
        return "\n\n"
    return ""


def _closing(tag: str) -> str:
    if tag in _BLOCKS or tag == "li":
        return "\n"
    return ""
