"""The sources an answer shows (docs/answers.md, "Citations"): up to CITATIONS_LIMIT, best first — the ones the
answer quotes, in the order of their [n] markers (so [1] is citations[0]), then the other retrieved sources that
support it — each marked `quoted: true|false`.

A model numbers its markers by the prompt's source list ([3] is the third source given); the built-in answerer by
its own list of quoted sources. `CitationMarkers` renumbers a provider's markers by first appearance *while the answer
streams*, so the streamed text, `completed.answer` and `completed.citations` agree without rewriting what a client
has already shown:

    markers = CitationMarkers(sources=5, limit=5)
    markers.feed("Hold it [3]") + markers.feed(" and [1].") + markers.flush()  ==  "Hold it [1] and [2]."
    markers.order == [3, 1]   # the provider's numbers, in the order shown

A marker of a source past the limit, or of a source that does not exist, is dropped: never a wrong citation.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from documents.retrieval import DEFAULT_PARAMS, RetrievedChunk, chunks_near_duplicate, snippet_make

CITATIONS_LIMIT = 5

# "[2]", "[1, 3]", "[1,2]": one to two digits each (a year "[2024]" is not a marker).
_MARKER = re.compile(r"\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]")
# The end of a text that may be a marker still arriving ("[", "[1", "[1,", "[1]" before we know what follows it).
_MAYBE_MARKER_TAIL = re.compile(r"\[[\d,\s]{0,12}\]?$")


class CitationMarkers:
    """Renumbers the [n] markers of one provider's streamed answer by first appearance.

    sources: the highest number that names a source (None: any); limit: how many sources may be cited;
    line_end: a marker counts only at the end of a line or of the text (how the built-in answerer places them, so a
    footnote "[2]" inside a quoted sentence stays text). Markers inside `code` are code."""

    def __init__(self, *, sources: int | None, limit: int = CITATIONS_LIMIT, line_end: bool = False) -> None:
        self.sources = sources
        self.limit = limit
        self.line_end = line_end
        self.order: list[int] = []  # the provider's marker numbers, in the order shown ([k] is order[k-1])
        self.text = ""  # everything emitted so far
        self._shown: dict[int, int] = {}
        self._held = ""

    def feed(self, delta: str) -> str:
        """The part of `delta` (with what was held back) that can be shown now, markers renumbered."""
        buffer = self._held + delta
        tail = _MAYBE_MARKER_TAIL.search(buffer)
        cut = tail.start() if tail else len(buffer)
        self._held = buffer[cut:]
        return self._emit(buffer[:cut], final=False)

    def flush(self) -> str:
        """The rest, at the end of the answer."""
        held, self._held = self._held, ""
        return self._emit(held, final=True)

    def _emit(self, text: str, *, final: bool) -> str:
        if not text:
            return ""
        out: list[str] = []
        position = 0
        for match in _MARKER.finditer(text):
            before = text[position:match.start()]
            out.append(before)
            position = match.end()
            ticks = (self.text + "".join(out)).count("`")
            at_line_end = match.end() == len(text) and final or text[match.end():match.end() + 1] == "\n"
            if ticks % 2 or (self.line_end and not at_line_end):
                out.append(match.group(0))  # code, or a bracket inside a quoted sentence: text, unchanged
                continue
            numbers = [self._number(int(n)) for n in match.group(1).split(",")]
            out.append("".join(f"[{n}]" for n in dict.fromkeys(n for n in numbers if n is not None)))
        out.append(text[position:])
        emitted = "".join(out)
        self.text += emitted
        return emitted

    def _number(self, original: int) -> int | None:
        if original < 1 or (self.sources is not None and original > self.sources):
            return None
        if original not in self._shown:
            if len(self.order) >= self.limit:
                return None
            self.order.append(original)
            self._shown[original] = len(self.order)
        return self._shown[original]


def citations_build(
    *, sources: Sequence[RetrievedChunk], quoted: Sequence[int], snippets: dict[int, str] | None = None,
    limit: int = CITATIONS_LIMIT,
) -> list[dict[str, Any]]:
    """The answer's citations: `sources[i]` for i in `quoted` (marker order), then supporting sources.

    Supporting: the other retrieved sources (best first), those from a document, then a section, not cited yet
    preferred, near-duplicates of a cited passage left out, and only those as close to the question as retrieval asks
    of a source that covers it (its best cosine, chunk or sentence, at the coverage threshold); up to `limit` in all.
    """
    snippets = snippets or {}
    chosen: list[int] = []
    for index in quoted:
        if 0 <= index < len(sources) and index not in chosen and len(chosen) < limit:
            chosen.append(index)
    quoted_count = len(chosen)
    candidates = [index for index in range(len(sources)) if index not in chosen and _supports(sources[index])]
    documents = {sources[index].document_id for index in chosen}
    sections = {(sources[index].document_id, sources[index].section) for index in chosen}
    tiers: list[list[int]] = [[], [], []]
    for index in candidates:
        chunk = sources[index]
        tier = 0 if chunk.document_id not in documents else (1 if (chunk.document_id, chunk.section) not in sections
                                                             else 2)
        tiers[tier].append(index)
    supporting: list[int] = []
    for index in (i for tier in tiers for i in tier):
        if len(chosen) + len(supporting) >= limit:
            break
        if any(chunks_near_duplicate(sources[index].text, sources[other].text) for other in (*chosen, *supporting)):
            continue
        supporting.append(index)
    chosen += sorted(supporting)  # the supporting ones best first, as retrieval ranked them
    return [{**sources[index].citation(snippet=snippet_make(sources[index].text, around=snippets[index])
                                       if snippets.get(index) else None),
             "quoted": position < quoted_count}
            for position, index in enumerate(chosen)]


def _supports(chunk: RetrievedChunk) -> bool:
    cosines = [score for score in (chunk.dense_score, chunk.sentence_score) if score is not None]
    if not cosines:
        return True  # the dense search was not available: retrieval's own list is all we know
    return max(cosines) >= DEFAULT_PARAMS.cover_threshold
