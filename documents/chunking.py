"""Split parsed sections into chunks that fit the embedding model's window, heading-aware, by tokens.

Each section (a heading's text, a PDF page, a CSV row) is split on its own, so a chunk never spans two
headings or two pages. LangChain's RecursiveCharacterTextSplitter does the splitting (paragraphs, then lines,
sentences, words) with the embedding model's own tokenizer as the length function; a run of text with no
place to split (a long URL, base64) is cut at token boundaries.

What gets embedded is `embed_text`: a short "title › heading › heading" line, then the chunk's text. Together,
plus the model's two special tokens, they never exceed the model's window (all-MiniLM-L6-v2: 256 word pieces;
the model silently ignores whatever lies beyond).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from langchain_text_splitters import RecursiveCharacterTextSplitter

from documents.parsers import ParsedDocument

HEADING_SEPARATOR = " › "
PREFIX_MAX_TOKENS = 48
OVERLAP_RATIO = 0.12
SPECIAL_TOKENS = 2  # [CLS] and [SEP]
HEADING_PATH_MAX_CHARS = 1000  # Chunk.heading_path
# Regexes, tried in order; separators stay with the text before them, so chunks join back to the section.
# Sentences come first: LangChain overlaps whole pieces, so pieces must be smaller than the overlap for a
# chunk to repeat the end of the one before it.
SEPARATORS = [r"\n\s*\n+|(?<=[.!?:])\s+", r"\n", r"(?<=[;,])\s+", r"\s+"]
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class ChunkDraft:
    ordinal: int
    text: str  # the chunk's own text: stored, shown in citations, indexed for full-text search
    token_count: int  # word pieces of `text`
    heading_path: str  # "Installation › Upgrading"
    page: int | None
    embed_text: str = ""  # what goes to the embedding model: "Title › Installation › Upgrading\n" + text


def document_chunk(
    *,
    parsed: ParsedDocument,
    title: str,
    tokenizer_count: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
    overlap_ratio: float = OVERLAP_RATIO,
) -> list[ChunkDraft]:
    """Chunks for a parsed document, numbered from 0 in reading order.

    tokenizer_count counts word pieces without special tokens; max_tokens is the model's whole window.
    Both default to the configured embedder's.
    """
    if tokenizer_count is None or max_tokens is None:
        from documents.embedding import embedder

        model = embedder()
        tokenizer_count = tokenizer_count or model.count_tokens
        max_tokens = max_tokens or model.max_tokens
    count = lru_cache(maxsize=16384)(tokenizer_count)
    window = max_tokens - SPECIAL_TOKENS
    drafts: list[ChunkDraft] = []
    for section in parsed.sections:
        path = [heading for heading in section.heading_path if heading]
        prefix = chunk_prefix(title=title, heading_path=path, count=count)
        budget = window - (count(prefix) if prefix else 0)
        for piece in _split(section.text, budget, count, overlap_ratio):
            embed_text = f"{prefix}\n{piece}" if prefix else piece
            # Token counts are additive across whitespace for WordPiece; check anyway and cut further if not.
            while count(embed_text) > window:
                piece = _hard_split(piece, budget - (count(embed_text) - window), count)[0]
                embed_text = f"{prefix}\n{piece}" if prefix else piece
            drafts.append(ChunkDraft(
                ordinal=len(drafts),
                text=piece,
                token_count=count(piece),
                heading_path=HEADING_SEPARATOR.join(path)[:HEADING_PATH_MAX_CHARS],
                page=section.page,
                embed_text=embed_text,
            ))
    return drafts


def chunk_prefix(*, title: str, heading_path: list[str], count: Callable[[str], int]) -> str:
    """ "Title › Heading › Subheading", at most PREFIX_MAX_TOKENS; the title is not repeated as a heading."""
    title = (title or "").strip()
    path = list(heading_path)
    if path and title and path[0].casefold() == title.casefold():
        path = path[1:]
    parts = [part for part in [title, *path] if part]
    prefix = HEADING_SEPARATOR.join(parts)
    if count(prefix) <= PREFIX_MAX_TOKENS:
        return prefix
    # Keep the title and the innermost heading, which say the most about the text.
    if len(parts) > 2:
        prefix = HEADING_SEPARATOR.join([parts[0], "…", parts[-1]])
        if count(prefix) <= PREFIX_MAX_TOKENS:
            return prefix
    return _hard_split(prefix, PREFIX_MAX_TOKENS, count)[0]


def _splitter(budget: int, overlap: int, count: Callable[[str], int]) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=budget, chunk_overlap=overlap, length_function=count, separators=SEPARATORS,
        is_separator_regex=True, keep_separator="end", strip_whitespace=True,
    )


def _split(text: str, budget: int, count: Callable[[str], int], overlap_ratio: float) -> list[str]:
    text = text.strip()
    if not text:
        return []
    if count(text) <= budget:
        return [text]
    overlap = max(0, min(int(budget * overlap_ratio), budget // 2))
    pieces: list[str] = []
    for piece in _splitter(budget, overlap, count).split_text(text):
        if count(piece) <= budget:
            pieces.append(piece)
        else:  # nothing left to split on: cut at token boundaries
            pieces.extend(_hard_split(piece, budget, count))
    return [piece for piece in pieces if piece]


def _hard_split(text: str, budget: int, count: Callable[[str], int]) -> list[str]:
    """Cut into pieces of at most `budget` tokens, at whitespace when there is some near the cut."""
    budget = max(budget, 1)
    pieces = []
    rest = text.strip()
    while rest:
        if count(rest) <= budget:
            pieces.append(rest)
            break
        low, high = 1, len(rest)  # the longest prefix within budget, by bisection on characters
        while low < high:
            middle = (low + high + 1) // 2
            if count(rest[:middle]) <= budget:
                low = middle
            else:
                high = middle - 1
        cut = low
        space = max((m.start() for m in _WHITESPACE.finditer(rest, int(cut * 0.8), cut)), default=-1)
        if space > 0:
            cut = space
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return [piece for piece in pieces if piece]
