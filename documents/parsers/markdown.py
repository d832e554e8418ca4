"""TXT and Markdown: Markdown headings (ATX `#` and setext underlines) give the heading path.

A line scanner, not a full Markdown parser: we only need where headings are (outside fenced code), and
markdown-it-py's block parser costs about 2 s per MB here, too slow for the large text files people upload.
The section text keeps the author's Markdown as written; it reads well and embeds well.
"""
from __future__ import annotations

import re
from pathlib import Path

from documents.parsers.base import (
    ParsedDocument,
    Section,
    bytes_decode,
    heading_stack_push,
    inline_clean,
    sections_finish,
    text_clean,
    title_from_filename,
)

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_NOT_PARAGRAPH = re.compile(r"^ {0,3}(?:[-*+]\s|\d{1,9}[.)]\s|>|#|`{3,}|~{3,}|<)|^(?: {4}|\t)")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.IGNORECASE)


def text_parse(*, path: Path, filename: str) -> ParsedDocument:
    return markdown_sections(bytes_decode(path.read_bytes()), filename=filename)


def markdown_sections(source: str, *, filename: str) -> ParsedDocument:
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    title = ""
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter
        for index in range(1, min(len(lines), 200)):
            match = _FRONT_MATTER_TITLE.match(lines[index])
            if match and not title:
                title = inline_clean(match.group(1))
            if lines[index].strip() in ("---", "..."):
                start = index + 1
                break
        else:
            title = ""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    first_heading = ""
    fence: str | None = None

    def flush() -> None:
        text = text_clean("\n".join(body), keep_indent=True)
        if text:
            sections.append(Section(text=text, heading_path=[t for _, t in stack]))
        body.clear()

    def heading(level: int, text: str) -> None:
        nonlocal first_heading
        text = inline_clean(text, 200)
        flush()
        if not text:
            return
        if not first_heading:
            first_heading = text
            if level == 1 and not title:
                return  # the document's own title: not a heading level of its own in every chunk
        heading_stack_push(stack, level, text)

    for line in lines[start:]:
        if fence is not None:
            body.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        fence_match = _FENCE.match(line)
        if fence_match:
            fence = fence_match.group(1)
            body.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            heading(len(atx.group(1)), atx.group(2) or "")
            continue
        setext = _SETEXT.match(line)
        if setext and body and body[-1].strip() and not _NOT_PARAGRAPH.match(body[-1]):
            # Only the paragraph's last line becomes the heading; earlier lines stay in the section before.
            text = body.pop()
            heading(1 if setext.group(1)[0] == "=" else 2, text)
            continue
        body.append(line)
    flush()
    return sections_finish(sections, title=title or first_heading or title_from_filename(filename))
