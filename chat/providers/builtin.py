"""The built-in answerer: no network, no language model. It answers from the retrieved passages themselves.

The best few chunks are split into units: sentences, commands, configuration lines, list items and table rows (a
table row is read with its header, "Norway — Cost: €14.95", never set as code; table rules, "| Note" labels and
captions are dropped). A unit scores by the share of the question's informative stemmed words it covers (rarer words
weigh more), by whether it holds something to type or configure when the question asks how/which/where, by whether it
names labels, menu paths or values, and by how much less similar its chunk is to the question than the best chunk.
The key sentence is the best-scoring unit: the answer opens on it (or on the line that introduces it, "... execute:")
and runs on through its chunk (at most ~150 words, never ending on the sentence that introduces a command, list or
table; a numbered list is quoted whole); when another chunk is about as close, its best run (~50 words) follows:
answers are often split across two. Each passage ends with its inline marker [n]; commands are set in backticks on
their own line and never carry a marker; list items and rows keep their own lines. It is a LangChain chat model like
the others: `.stream()` yields the answer in small word-like pieces.

Measured on the bench (docs/answers.md): scoring sentences by meaning with the embedding model adds 1-3 points of
keyword recall for 350-700 ms before the first token on two cores, so `weight_dense` is off by default.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from documents.retrieval import stems  # noqa: F401  (the answerer reads words as retrieval does)

BUILTIN_MODEL = "extractive-v1"


@dataclass(frozen=True)
class ComposeParams:
    # Chosen on the quality bench's fit half (bench/quality.py `composer_grid`; docs/answers.md).
    max_sources: int = 4  # passages come from the best few chunks only: lower-ranked ones drift off topic
    weight_lexical: float = 0.6
    weight_action: float = 0.25
    weight_specific: float = 0.1  # a sentence on the question's words that names labels, paths, values
    weight_dense: float = 0.0  # sentence-level meaning (the embedding model); costs latency, see above
    dense_units: int = 8
    first_words: int = 150
    second_words: int = 50
    source_decay: float = 0.15  # per rank, when the sources carry no similarity scores
    similarity_gap_weight: float = 2.0  # how much a chunk's lower similarity to the question costs its windows
    second_max_gap: float = 0.1  # a second passage only from a chunk this close to the best one
    second_min_ratio: float = 0.3  # ... and only when it scores at least this share of the first
    length_bonus: float = 0.1
    steps_words: int = 180  # a numbered list up to this long is quoted whole
    key_first: bool = True  # the first passage opens on the key sentence (the best-scoring one)


DEFAULT_COMPOSE = ComposeParams()

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”’)]?\s+(?=[A-Z0-9“\"'(\[])")
_PIECE = re.compile(r"\s*[^\s]{1,12}|\s+")
# Code-like tokens: paths, options, dotted or dashed names, key::value — what procedural answers are made of (not the
# abbreviations of prose: "9 a.m." made "On Saturday we open at 9 a.m." the most procedural sentence of a shop).
_CODE = re.compile(r"(^|\s)(/[\w.-]+/[\w./-]*|--?[a-zA-Z][\w-]*|(?![ap]\.m\b|e\.g\b|i\.e\b)[a-z0-9]+(?:[-_.][a-z0-9]+)+|\w+::\w+|[a-z]+\(\d\))(?=[\s.,;:)]|$)")
# "the reportbug command", "the nagios4 package", "command apt-mark": how technical prose names the thing to use.
_NAMED_TOOL = re.compile(r"\bthe\s+[\w.+-]+\s+(command|package|program|tool|utility|option|directive)s?\b"
                         r"|\b(command|package|program|tool|utility|option)\s+[a-z][\w.+-]*\d*\b(?=\s*[,.;:)(]|\s+(to|which|that|is|will|can))",
                         re.IGNORECASE)
# What a precise answer names: a menu path, a quoted or bold label, a Capitalised Interface Name, a number.
_SPECIFIC = re.compile(r"→|->|“[^”]{2,50}”|\*\*[^*]{2,50}\*\*|\b[A-Z]\w*(?:\s+(?:[A-Z]\w*|&|and|of|to)){0,3}\s+[A-Z]\w*\b"
                       r"|\d+(?:[.,]\d+)?")
_PROCEDURAL = re.compile(r"^\s*(how|which|what (command|tool|file|package|line|option)|where|can i|is there|should i|"
                         r"what do i|what should)\b", re.IGNORECASE)
_DEPENDENT_START = re.compile(r"^(this|these|that|those|it|its|they|then|so|thus|however|also|in (this|that) case|"
                              r"to do (so|this|that)|for (this|that)|here|the latter|the former|such)\b", re.IGNORECASE)


@dataclass
class Unit:
    source: int
    position: int
    text: str
    is_command: bool
    stems: frozenset[str]
    action: float = 0.0
    score: float = 0.0
    cosine: float = 0.0
    specific: float = 0.0  # how much it names: labels, menu paths, numbers (see _SPECIFIC)
    # "prose" (a sentence), "command" (typed at a prompt), "code" (a configuration or output line), "item" (a list
    # item, `bullet` its "-" or "3."), "row" (a table or CSV row, its header folded in: "Norway — Cost: €14.95").
    kind: str = "prose"
    bullet: str = ""
    block: int = -1  # the items of one list, the rows of one table: a numbered list is kept whole

    @property
    def on_own_line(self) -> bool:
        return self.kind != "prose"

    @property
    def words(self) -> int:
        return len(self.text.split())


@dataclass
class Composition:
    text: str
    sources: list[int] = field(default_factory=list)  # indexes into the given sources, in marker order
    snippets: dict[int, str] = field(default_factory=dict)  # source index -> its best sentence
    units: int = 0




def _is_command(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(("$ ", "# ", "#!", "~$")) or bool(re.match(r"^[\w.-]+@[\w.-]+:\S*[$#] ", stripped))


def _is_code_line(line: str) -> bool:
    """A configuration or output line (`deb http://... main`, `Pin-Priority: 1001`): no sentence, but content."""
    stripped = line.strip()
    if re.search(r"[.!?]$", stripped) and len(stripped.split()) > 6:
        return False
    return bool(re.search(r"https?://|[=<>{}|]|^\S+:\s|\w::\w", stripped) or len(_CODE.findall(stripped)) >= 2)


def _is_heading_like(text: str) -> bool:
    # "Returns: 30 days from the date of purchase" or "Free shipping over $50" is a fact, not a heading.
    return (len(text.split()) < 8 and not re.search(r"[.!?:;)]$", text.strip())
            and not re.search(r"\w:\s+\S|[\d$€£@]", text))


def _logical_lines(text: str) -> list[str]:
    """Lines with hard-wrapped prose joined back ("... the network name (SSID)" + "and a password ...")."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        previous = lines[-1] if lines else ""
        words = previous.split()
        if (line and previous and line[0].islower() and not _is_command(line) and not _is_command(previous)
                and not re.search(r"[.!?:;]$", previous) and len(words) >= 6
                and len(_CODE.findall(previous)) < len(words) / 4 and not re.search(r"\S {3,}\S", previous)):
            lines[-1] = f"{previous} {line}"
        else:
            lines.append(line)
    return lines


# Lines that carry nothing to quote: table rules and separators ("|", "=====", "|---|---|"), the labels of the
# boxes manuals put around notes ("| Note", "| Tip"), and captions ("Table 5.2. Starting account numbers.").
_NOISE = re.compile(r"^[\W_]*$")
_ADMONITION = re.compile(r"^\|?\s*(note|tip|warning|important|caution|danger|in practice|going further)\s*\|?$"
                         r"|^\|\s*(note|tip|warning|important|caution)\b[^|]{0,40}\|?$", re.IGNORECASE)
_CAPTION = re.compile(r"^(table|figure|example)\s+[\dA-Z]+(\.\d+)*\.\s", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^([-*+•]|\d{1,2}[.)])\s+(?=\S)")
# A CSV row as the CSV parser writes it: "sku: LO-JK-101; product: Skiddaw Jacket; price_eur: 149.00".
_KEYED_ROW = re.compile(r"^[\w .()/-]{1,30}:\s[^;]+(;\s*[\w .()/-]{1,30}:\s[^;]*){2,}$")
_ITEM_WORDS = 80  # a longer list item is quoted sentence by sentence
_SHORT_TEXT_WORDS = 60  # a chunk this short is a small business's notice: its last line is never a heading


def _cells(line: str) -> list[str]:
    """A table row's cells: "| a | b |" (Markdown), "a | b | c" (an HTML table as text), "a    b" (a text table)."""
    stripped = line.strip()
    if "|" in stripped:
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
    elif re.search(r"\S {3,}\S", stripped):
        cells = [cell.strip() for cell in re.split(r"\s{3,}", stripped)]
    else:
        return []
    return cells if sum(bool(cell) for cell in cells) >= 2 else []


def _row_text(cells: list[str], header: list[str] | None) -> str:
    """A row read aloud: "Norway, Switzerland — Return method: You arrange ...; Cost: Your own cost"."""
    if header and len(header) == len(cells):
        rest = "; ".join(f"{name}: {cell}" if name else cell
                         for name, cell in zip(header[1:], cells[1:]) if cell)
        return f"{cells[0]} — {rest}" if cells[0] and rest else cells[0] or rest
    return " — ".join(cell for cell in cells if cell)


def _is_header(cells: list[str]) -> bool:
    return all(len(cell.split()) <= 4 and not re.search(r"[\d$€£%]", cell) for cell in cells)


def _tables(lines: list[str]) -> dict[int, tuple[int, str]]:
    """Line index -> (the table's first line index, the row read aloud) for every line that is a table row; the
    header row maps to an empty text. A table is two or more rows with the same number of cells (blank lines and
    rules between them allowed), or one Markdown row ("| a | b |")."""
    rows: dict[int, tuple[int, str]] = {}
    index = 0
    while index < len(lines):
        cells = _cells(lines[index]) if not _is_command(lines[index]) else []
        if not cells:
            index += 1
            continue
        group = [(index, cells)]
        markdown_header = False
        scan = index + 1
        while scan < len(lines):
            line = lines[scan]
            if not line or _NOISE.match(line):
                markdown_header = markdown_header or (len(group) == 1 and "-" in line and "|" in line)
                scan += 1
                continue
            more = _cells(line)
            if not more and "|" not in lines[index] and line[0].islower() and len(line.split()) <= 8:
                # A text table's cell wrapped onto the next line ("Larkspur clothing, footwear," + "sleeping mats").
                last = group[-1][1]
                group[-1] = (group[-1][0], [f"{last[0]} {line}", *last[1:]])
                rows[scan] = (index, "")
                scan += 1
                continue
            if len(more) != len(cells):
                break
            group.append((scan, more))
            scan += 1
        if len(group) >= 2 or lines[index].strip().startswith("|"):
            header = None
            if len(group) >= 2 and (markdown_header or _is_header(group[0][1])):
                header = group[0][1]
                rows[group[0][0]] = (index, "")
                group = group[1:]
            for line_index, row in group:
                rows[line_index] = (index, _row_text(row, header))
        index = scan if len(group) >= 1 and scan > index + 1 else index + 1
    return rows


def split_units(text: str, source: int) -> list[Unit]:
    units: list[Unit] = []
    lines = _logical_lines(text)
    tables = _tables(lines)

    def add(line: str, kind: str, *, action: float, bullet: str = "", block: int = -1) -> None:
        units.append(Unit(source, len(units), line, kind in ("command", "code"), stems(line), action=action,
                          kind=kind, bullet=bullet, block=block))

    # A heading heads something: the last line of a short text (a shop's notice, not a manual's page, where a chunk
    # may end on the next section's heading) is content however short ("Gift cards" over "Gift vouchers never
    # expire": the first is a label, the second the fact).
    last_line = max((index for index, line in enumerate(lines) if line and not _NOISE.match(line)), default=-1)
    if len(text.split()) > _SHORT_TEXT_WORDS:
        last_line = -1

    def sentences(line: str, kind: str = "prose", bullet: str = "", block: int = -1, last: bool = False) -> None:
        for number, sentence in enumerate(_SENTENCE_END.split(line)):
            sentence = sentence.strip()
            if len(sentence.split()) < 3 or (_is_heading_like(sentence) and not last):
                continue
            action = min(1.0, (len(_CODE.findall(sentence)) + 2 * len(_NAMED_TOOL.findall(sentence))) / 2)
            # A long list item: its first sentence carries the bullet, the rest follow it as prose.
            add(sentence, kind if number == 0 else "prose", action=action, bullet=bullet if number == 0 else "",
                block=block)

    blocks = 0
    table_block: dict[int, int] = {}  # a table's first line -> its block
    list_block: int | None = None  # the list the next item continues, while only blank lines come between
    for index, line in enumerate(lines):
        if not line or _NOISE.match(line) or _ADMONITION.match(line) or _CAPTION.match(line):
            continue
        item = _LIST_ITEM.match(line) if index not in tables else None
        if not item:
            list_block = None
        if index in tables:
            first, row = tables[index]
            if first not in table_block:
                table_block[first], blocks = blocks, blocks + 1
            if row:
                add(row, "row", action=min(1.0, len(_CODE.findall(row)) / 2), block=table_block[first])
        elif _is_command(line):
            # "# Stable updates" in a sources.list example is a comment, not a root prompt.
            if not (line.startswith("# ") and len(line.split()) <= 4 and not _CODE.search(line[2:])):
                add(line, "command", action=1.0)
        elif _KEYED_ROW.match(line):
            add(line, "row", action=0.0)
        elif item:
            if list_block is None:
                list_block, blocks = blocks, blocks + 1
            body = line[item.end():]
            bullet = item.group(1) if item.group(1)[0].isdigit() else "-"
            if len(body.split()) > _ITEM_WORDS:
                sentences(body, "item", bullet, list_block)
            elif len(body.split()) >= 2:
                action = min(1.0, (len(_CODE.findall(body)) + 2 * len(_NAMED_TOOL.findall(body))) / 2)
                add(body, "item", action=action, bullet=bullet, block=list_block)
        elif _is_code_line(line) and len(line) <= 200:
            # Configuration lines are content; they weigh less than a command someone types.
            add(line, "code", action=0.5)
        else:
            sentences(line, last=index == last_line)
    return units


def _cosines(question: str, texts: list[str]) -> list[float]:
    if not texts:
        return []
    try:
        from documents.embedding import embedder

        vectors = embedder().embed([question, *texts])
    except Exception:  # the other signals still give a sensible answer
        return [0.0] * len(texts)
    q = vectors[0]
    return [float(sum(a * b for a, b in zip(q, v))) for v in vectors[1:]]


def builtin_compose(
    *, question: str, sources: Sequence[Any], params: ComposeParams = DEFAULT_COMPOSE
) -> Composition:
    """Compose an extractive answer from `sources` (objects with `.text`), best first. Empty text if nothing fits."""
    sources = list(sources)[: params.max_sources]
    units = [unit for index, source in enumerate(sources) for unit in split_units(source.text, index)]
    # A chunk's best evidence: its own similarity, or its best sentence's when retrieval scored its sentences.
    scores = [getattr(source, "evidence_score", getattr(source, "dense_score", None)) for source in sources]
    if scores and all(score is not None for score in scores):
        best = max(scores)
        penalties = [params.similarity_gap_weight * (best - score) for score in scores]
    else:
        penalties = [params.source_decay * index for index in range(len(sources))]
    if not units:
        return Composition(text="")
    from documents.retrieval import answer_type_stems, phrase_stems, question_stems as question_stems_make

    # "can I bring it back" asks about returns (retrieval's phrases, documents/retrieval.py `_PHRASES`).
    question_stems = question_stems_make(question)
    for unit in units:
        # "Call us 9am to 5pm at 555-..." answers "When is phone support open?" without the words "phone", "open";
        # "Bring it back within 14 days" says "return".
        unit.stems = unit.stems | ((answer_type_stems(question, unit.text) | phrase_stems(unit.text)) & question_stems)
    frequency: dict[str, int] = {}
    for unit in units:
        for stem in unit.stems & question_stems:
            frequency[stem] = frequency.get(stem, 0) + 1
    # Rarer question words count more: in a chunk about cron, "cron" says little and "cancel" a lot.
    weights = {stem: math.log(1 + len(units) / df) for stem, df in frequency.items()}
    total = sum(weights.values()) or 1.0
    procedural = 1.0 if _PROCEDURAL.match(question) else 0.4
    for unit in units:
        lexical = sum(weights.get(stem, 0.0) for stem in unit.stems & question_stems) / total
        if params.weight_specific:
            unit.specific = min(1.0, len(_SPECIFIC.findall(unit.text)) / 3)
        unit.score = (params.weight_lexical * lexical + params.weight_action * unit.action * procedural
                      + params.weight_specific * unit.specific * (lexical > 0))
    if params.weight_dense:
        shortlist = sorted((u for u in units if not u.is_command), key=lambda u: -u.score)[: params.dense_units]
        for unit, cosine in zip(shortlist, _cosines(question, [u.text for u in shortlist])):
            unit.cosine = cosine
    return _select_windows(units, question_stems, weights, procedural, params, penalties)


def _leads_into(unit: Unit, following: Unit) -> bool:
    """`unit` is what `following` needs to be understood: the sentence introducing a command, list or table
    ("... execute:"), or the one "This ..." refers to."""
    return unit.text.endswith(":") or (following.kind == "prose" and bool(_DEPENDENT_START.match(following.text)))


def _window_score(window: list[Unit], question_stems: frozenset[str], weights: dict[str, float], total: float,
                  procedural: float, params: ComposeParams, budget: int, penalty: float) -> float:
    covered: set[str] = set()
    for unit in window:
        covered |= unit.stems & question_stems
    coverage = sum(weights.get(stem, 0.0) for stem in covered) / total
    action = max(unit.action for unit in window) * procedural
    specific = max(unit.specific for unit in window if unit.stems & question_stems) if covered else 0.0
    words = sum(unit.words for unit in window)
    meaning = max(unit.cosine for unit in window)
    # Among windows that cover the question equally, the fuller one gives more of the surrounding explanation.
    return (params.weight_lexical * coverage + params.weight_action * action + params.weight_dense * meaning
            + params.weight_specific * specific - penalty + params.length_bonus * min(1.0, words / budget))


def _windows(units: list[Unit], budget: int) -> list[list[Unit]]:
    out = []
    for start in range(len(units)):
        if start > 0 and _DEPENDENT_START.match(units[start].text) and not units[start - 1].is_command:
            continue  # a window never opens on "This ..." without what "this" refers to
        words = 0
        for end in range(start, min(len(units), start + 8)):
            words += units[end].words
            if words > budget and end > start:
                break
            if units[end].text.endswith(":") and end + 1 < len(units) and units[end + 1].on_own_line:
                continue  # never stop on the sentence that introduces a command, a list or a table
            out.append(units[start:end + 1])
    return out


def _whole_steps(passage: list[Unit], units: list[Unit], limit: int) -> list[Unit]:
    """A passage that quotes a step of a numbered list quotes the whole list (and the line introducing it), as long
    as the list is at most `limit` words: half a procedure is no answer."""
    blocks = {unit.block for unit in passage if unit.kind == "item" and unit.bullet[:1].isdigit()}
    if not blocks:
        return passage
    first, last = passage[0].position, passage[-1].position
    for block in blocks:
        members = [unit for unit in units if unit.block == block]
        if sum(unit.words for unit in members) > limit:
            continue
        first, last = min(first, members[0].position), max(last, members[-1].position)
        if first > 0 and units[first - 1].text.endswith(":") and units[first - 1].kind == "prose":
            first -= 1
    return units[first:last + 1]


def _select_windows(units: list[Unit], question_stems: frozenset[str], weights: dict[str, float],
                    procedural: float, params: ComposeParams, penalties: list[float]) -> Composition:
    total = sum(weights.values()) or 1.0
    by_source: dict[int, list[Unit]] = {}
    for unit in units:
        by_source.setdefault(unit.source, []).append(unit)

    def best_window(budget: int, sources: list[int]) -> tuple[float, list[Unit]] | None:
        best: tuple[float, list[Unit]] | None = None
        for source in sources:
            for window in _windows(by_source[source], budget):
                score = _window_score(window, question_stems, weights, total, procedural, params, budget,
                                      penalties[source])
                if best is None or score > best[0]:
                    best = (score, window)
        return best

    if params.key_first:
        # The key sentence: the one that covers most of the question (rarer words weigh more) in the closest chunk.
        key = max(units, key=lambda unit: (unit.score - penalties[unit.source], -unit.source, -unit.position))
        source_units = by_source[key.source]
        start = key.position
        while start > 0 and _leads_into(source_units[start - 1], source_units[start]) and key.position - start < 2:
            start -= 1
        candidates = [window for window in _windows(source_units[start:], params.first_words)
                      if window[0] is source_units[start]]
        first = max(((_window_score(window, question_stems, weights, total, procedural, params, params.first_words,
                                    penalties[key.source]), window) for window in candidates),
                    key=lambda pair: pair[0], default=None)
        if first is None:
            first = (key.score, [key])
    else:
        first = best_window(params.first_words, sorted(by_source))
    if first is None:
        return Composition(text="")
    passages = [_whole_steps(first[1], by_source[first[1][0].source], params.steps_words)]
    first_source = first[1][0].source
    # A second passage from another chunk about as close to the question: answers are often split across two.
    others = [s for s in sorted(by_source) if s != first_source
              and penalties[s] - penalties[first_source] <= params.similarity_gap_weight * params.second_max_gap]
    second = best_window(params.second_words, others)
    if second is not None and second[0] >= params.second_min_ratio * first[0]:
        passages.append(_whole_steps(second[1], by_source[second[1][0].source], params.steps_words))
    return _render(passages)


def _line(unit: Unit) -> str:
    if unit.is_command:
        return f"`{unit.text}`"
    if unit.kind == "item":
        return f"{unit.bullet} {unit.text}"
    if unit.kind == "row":
        return f"- {unit.text}"
    return unit.text


def _render(passages: list[list[Unit]]) -> Composition:
    order: list[int] = []
    for passage in passages:
        if passage[0].source not in order:
            order.append(passage[0].source)
    paragraphs: list[str] = []
    snippets: dict[int, str] = {}
    for passage in passages:
        marker = order.index(passage[0].source) + 1
        snippets.setdefault(passage[0].source, max(passage, key=lambda u: u.score).text)
        # A numbered step shown without the rest of its list is shown as a bullet: "3." alone would read "1.".
        whole = {unit.block for unit in passage if unit.kind == "item" and unit.bullet == "1."}
        lines: list[str] = []
        prose: list[str] = []
        for unit in passage:
            if unit.kind == "prose":
                prose.append(unit.text)
                continue
            if prose:
                lines.append(" ".join(prose))
                prose = []
            if unit.kind == "item" and unit.bullet[:1].isdigit() and unit.block not in whole:
                unit = replace(unit, bullet="-")
            lines.append(_line(unit))
        if prose:
            lines.append(" ".join(prose))
        # The marker goes after the last line that is not a command (never inside something someone may copy).
        for index in range(len(lines) - 1, -1, -1):
            if not lines[index].startswith("`"):
                lines[index] = f"{lines[index]} [{marker}]"
                break
        else:
            lines[-1] = f"{lines[-1]} [{marker}]"
        paragraphs.append("\n".join(lines))
    units = sum(len(p) for p in passages)
    return Composition(text="\n\n".join(paragraphs), sources=order, snippets=snippets, units=units)


_MARKER = re.compile(r"\[(\d+)\](?=\n|$)")


def builtin_compose_parts(*, parts: Sequence[tuple[str, Sequence[Any]]], sources: Sequence[Any]) -> Composition:
    """One answer to a multi-part question: each part composed from its own sources, one paragraph group after
    another, with markers renumbered into one citation list (indices into `sources`, which holds every part's
    sources)."""
    # By chunk: two parts that found the same chunk hold two objects for it, and `sources` keeps the first one only.
    def key(source: Any) -> Any:
        return getattr(source, "chunk_id", None) or id(source)

    index_of = {key(source): index for index, source in enumerate(sources)}
    order: list[int] = []
    snippets: dict[int, str] = {}
    texts: list[str] = []
    units = 0
    for question, part_sources in parts:
        composition = builtin_compose(question=question, sources=part_sources)
        if not composition.text:
            continue
        mapping: dict[int, int] = {}
        for number, local in enumerate(composition.sources, start=1):
            shared = index_of.get(key(part_sources[local]))
            if shared is None:  # not among the answer's sources: its marker goes, never a wrong citation
                mapping[number] = 0
                continue
            if shared not in order:
                order.append(shared)
            mapping[number] = order.index(shared) + 1
            if local in composition.snippets:
                snippets.setdefault(shared, composition.snippets[local])
        texts.append(_MARKER.sub(
            lambda m: f"[{mapping[int(m.group(1))]}]" if mapping.get(int(m.group(1))) else "", composition.text))
        units += composition.units
    return Composition(text="\n\n".join(texts), sources=order, snippets=snippets, units=units)


def text_pieces(text: str) -> Iterator[str]:
    """Word-like pieces (at most 12 characters plus leading whitespace), as a model's tokens arrive."""
    for match in _PIECE.finditer(text):
        yield match.group(0)


class BuiltinChatModel(BaseChatModel):
    """Streams either a fixed text or an extractive answer composed from `sources` for `question`."""

    question: str = ""
    sources: list[Any] = []
    fixed_text: str | None = None
    fallback_text: str = ""  # said when the sources hold nothing quotable
    parts: list[Any] = []  # [(part question, its sources)] for a multi-part question; `sources` holds them all
    note_text: str = ""  # said after a composed answer (the parts of a multi-part question nothing covers)
    _composition: Composition | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "builtin-extractive"

    @property
    def composition(self) -> Composition:
        if self._composition is None:
            if self.fixed_text is not None:
                self._composition = Composition(text=self.fixed_text)
            else:
                if self.parts:
                    composition = builtin_compose_parts(parts=self.parts, sources=self.sources)
                else:
                    composition = builtin_compose(question=self.question, sources=self.sources)
                if composition.text and self.note_text:
                    composition = replace(composition, text=f"{composition.text}\n\n{self.note_text}")
                self._composition = composition if composition.text else Composition(text=self.fallback_text)
        return self._composition

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self.composition.text, response_metadata={"finish_reason": "stop",
                                                                              "model_name": BUILTIN_MODEL})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in text_pieces(self.composition.text):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata={"finish_reason": "stop", "model_name": BUILTIN_MODEL}))
