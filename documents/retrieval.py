"""Knowledge retrieval for answers: hybrid dense + full-text search in the current workspace, fused, de-duplicated,
diversified, with a decision whether the knowledge base covers the question.

    result = knowledge_retrieve(query="How do I list the files of a package?", limit=5)
    result.covered, result.chunks[0].title, result.chunks[0].citation()

Design (docs/answers.md has the measurements behind every constant here):
- dense: the question's embedding against the workspace's own vector collection (cosine similarity);
- full text: BM25 over PostgreSQL's `english` (stemmed) tsvectors, ranked by PostgreSQL from the workspace's lexical
  index (documents/lexical.py: per-term document frequencies, per-(term, chunk) frequencies and chunk lengths, kept
  by a trigger on the chunk table). Term frequency = positions of the term in the body (weight B); title and heading
  terms carry weight A and count as a separate, capped title/heading signal. ts_rank has no IDF, which on a manual
  where "debian" is in every chunk ranks the wrong things first;
- fusion: a convex combination of the cosine similarity and the max-normalised BM25 score (alpha 0.9), chosen on
  the bench's "fit" half over weighted reciprocal rank fusion (equal-weight RRF made hit@1 and MRR worse, as did a
  naive unstemmed ts_rank fusion; exact identifiers are where the lexical side earns its place);
- near-duplicate chunks are dropped and at most `per_section` chunks of one section are kept while other sections
  have candidates, so five near-identical chunks of one section never fill the list;
- coverage: the best dense similarity decides, against a threshold fitted on one half of the bench questions and
  reported on the other;
- latency (docs/answers.md, "Latency, second pass"): every read by id is a primary-key probe the planner can't turn
  into a walk of the workspace, and the sentence signals reuse the question's vector and keep each sentence's vector
  and stems per workspace (documents/sentence_vectors.py). `RetrievalResult.cpu_ms` has each stage's CPU time.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection

from config.errors import ApplicationError, ErrorCode
from config.singletons import process_singleton

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalParams:
    dense_candidates: int = 40
    lexical_candidates: int = 40
    fusion: str = "convex"  # "convex": alpha * cosine + (1 - alpha) * bm25 / max bm25; "rrf": weighted RRF
    convex_alpha: float = 0.9
    rrf_k: int = 60
    weight_dense: float = 1.0
    weight_lexical: float = 0.5
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    heading_weight: float = 0.0  # IDF share credited for a title/heading match (measured: no gain; the dense side
    # already embeds each chunk with its "title › heading" line)
    common_term_df: float = 0.25  # terms in more than this share of chunks say nothing about the question
    per_section: int = 2
    duplicate_jaccard: float = 0.8
    # Coverage: covered when the best dense similarity reaches this (fitted on the bench's "fit" half; see
    # docs/answers.md). Term coverage was measured as a second signal and did not separate ("capital of France"
    # matches all its terms in a Linux manual), so it only decides when the dense search is unavailable.
    cover_threshold: float = 0.355
    lexical_only_terms: float = 0.99
    # Sentence-level coverage (docs/answers.md, "Small knowledge bases"): a short multi-topic chunk is a poor
    # stand-in for the one sentence that answers. When the chunk rule above does not cover the question (or the best
    # chunks are short enough to score for free), the sentences of the best few chunks are embedded and the question
    # is covered when  best sentence cosine + sentence_lexical_weight * lexical agreement
    #                  - sentence_unknown_weight * share of the question's words the knowledge base never uses
    # reaches cover_sentence. Lexical agreement: the largest share of the question's content words (stemmed; an
    # e-mail address, a phone number or a price also count as the words that ask for them) found in one sentence.
    sentence_chunks: int = 3
    sentence_max: int = 40
    sentence_always_max: int = 16  # score sentences even when the chunk rule covers, up to this many (re-ranking)
    cover_sentence: float = 0.49
    sentence_lexical_weight: float = 0.3
    sentence_unknown_weight: float = 0.1
    typo_min_length: int = 5  # a word the knowledge base doesn't know, this long, is tried one edit away
    # Ordering the best chunks by their best sentence: cosine + this share of its lexical agreement (with the
    # question's answer type, see _ANSWER_TYPES), so "When is phone support open?" cites the sentence holding a phone
    # number and hours, not "Opening hours: ..." (chosen on the small-KB fit half).
    sentence_rank_lexical_weight: float = 0.5
    # Just over the chunk threshold (by less than this) and the scored sentences don't reach cover_sentence: not
    # covered (measured on the small-KB fit half: every such answer there was to an out-of-scope question).
    sentence_veto_margin: float = 0.05
    sentence_rank_type_weight: float = 0.2  # + this when the sentence holds the kind of value the question asks for
    # - this when the sentence is about other days than the question ("Saturday hours?" over "Mon–Fri 9–5"; a
    # question that names no day asks about the working week; see day_agreement), and again when its times are the
    # phone line's and the question asks when the shop is open (see line_agreement).
    sentence_rank_day_weight: float = 0.3
    # A question word said in another word by one of the closest sentences ("delivery" / "shipping") counts as found
    # there when the two words' vectors are this close (see _near_words; chosen on the small-KB probe sample: 0.6
    # takes delivery/shipping 0.69 and refund/return 0.60, not rewards/gift 0.48 or cash/card 0.47).
    near_word_cosine: float = 0.6
    near_word_sentences: int = 5


DEFAULT_PARAMS = RetrievalParams()


@dataclass
class RetrievedChunk:
    chunk_id: int
    document_id: int
    ordinal: int
    title: str
    filename: str
    section: str
    page: int | None
    text: str
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None
    fused_score: float = 0.0
    matched_terms: frozenset[str] = frozenset()
    sentence_score: float | None = None  # cosine of the question to this chunk's best sentence, when scored
    url: str = ""  # the web page a crawled or imported document came from (+ "#heading" when known)
    # Its best sentence's cosine + sentence_rank_lexical_weight * that sentence's lexical agreement, when scored.
    sentence_evidence: float | None = None

    @property
    def evidence_score(self) -> float | None:
        """How close the chunk's best evidence is to the question: the chunk's cosine, or its best sentence's
        (cosine and the words it shares with the question, see sentence_signals)."""
        # The sentence's evidence, when scored, stands for its cosine: it may be lower ("Saturday hours?" over a
        # sentence about the working week, see day_agreement).
        sentence = self.sentence_evidence if self.sentence_evidence is not None else self.sentence_score
        scores = [s for s in (self.dense_score, sentence) if s is not None]
        return max(scores) if scores else None

    @property
    def score(self) -> float:
        """What a citation shows: the cosine similarity to the question when the dense search saw the chunk."""
        return round(self.dense_score if self.dense_score is not None else self.fused_score, 4)

    def citation(self, *, snippet: str | None = None) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "title": self.title,
            "filename": self.filename,
            "section": self.section,
            "page": self.page,
            "snippet": snippet if snippet is not None else snippet_make(self.text),
            "score": self.score,
            "chunk_id": self.chunk_id,
            "url": self.url or None,
            "dashboard_url": chunk_dashboard_url(document_id=self.document_id, ordinal=self.ordinal),
        }


@dataclass
class RetrievalResult:
    query: str
    chunks: list[RetrievedChunk]
    covered: bool
    confidence: float
    top_similarity: float
    term_coverage: float
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: str = ""
    candidates: list[RetrievedChunk] = field(default_factory=list)  # the fused list before diversification
    signals: dict[str, Any] = field(default_factory=dict)  # sentence-level coverage signals, when computed
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process CPU time per stage


# --- entry point -------------------------------------------------------------------------------------------------


def knowledge_retrieve(*, query: str, limit: int = 5, params: RetrievalParams | None = None) -> RetrievalResult:
    """Hybrid retrieval in the current workspace's schema. Refuses to run in the public schema."""
    scope = _versions_seen.set({})
    try:
        return _retrieve(query=query, limit=limit, params=params)
    finally:
        _versions_seen.reset(scope)


def _retrieve(*, query: str, limit: int, params: RetrievalParams | None) -> RetrievalResult:
    schema_name = getattr(connection, "schema_name", None) or "public"
    if schema_name == "public":
        raise ApplicationError("Retrieval runs in a workspace, not in the public schema.",
                               code=ErrorCode.WRONG_SCHEMA, status_code=500)
    params = params or DEFAULT_PARAMS
    query = " ".join((query or "").split())[:1000]
    started = time.perf_counter()
    if not query:
        return RetrievalResult(query, [], False, 0.0, 0.0, 0.0, "empty_query")

    timings: dict[str, float] = {}
    cpu = _StageClock()
    degraded = ""
    # The terms are looked up first: the lookup reads the lexical version, which keys the vocabulary the typo fix
    # (and later the name and sentence rules) read. Looked up again only when a typo was fixed.
    looked_up = _query_terms(query, params=params)
    vector_version = looked_up[1].vector_version
    fixed = query_typos_fix(query, params=params)
    if fixed != query:
        query, looked_up = fixed, None
    cpu.lap("typos")
    dense: list[tuple[int, float]] = []
    query_vector: list[float] | None = None
    try:
        dense, query_vector = _dense_search(schema_name=schema_name, query=query, limit=params.dense_candidates,
                                            vector_version=vector_version)
    except Exception:  # the embedding service or vector store is down: answer from full text alone
        logger.warning("dense retrieval unavailable", exc_info=True)
        degraded = "dense_unavailable"
    timings["dense"] = _ms(started)
    cpu.lap("dense")

    lexical_started = time.perf_counter()
    terms, lexical = lexical_search(query=query, params=params, looked_up=looked_up)
    timings["lexical"] = _ms(lexical_started)
    cpu.lap("lexical")

    candidates = fuse(dense=dense, lexical=lexical, terms=terms, params=params)
    cpu.lap("fuse")
    chunks = diversify(candidates, limit=limit, params=params)
    top_similarity = max((c.dense_score for c in candidates if c.dense_score is not None), default=0.0)
    term_coverage = _term_coverage(chunks[:3], terms)
    covered, reason = coverage_decide(top_similarity=top_similarity, term_coverage=term_coverage,
                                      has_chunks=bool(chunks), degraded=degraded, params=params)
    confidence = coverage_confidence(top_similarity, params=params)
    foreign = foreign_names(query) if covered and not degraded else []
    if foreign:
        # "How do I set up shipping zones in my Shopify store?": a product or place the knowledge base never names
        # is another business's question, however similar the rest of it is (docs/answers.md, "Refusal").
        covered, reason, confidence = False, "unknown_name", min(confidence, 0.5)
    if covered and not degraded and not foreign and money_asked(query) and not any(
            _MONEY_VALUE.search(chunk.text) for chunk in chunks):
        # "How much does the Business plan cost per user per month?" over a manual that states no price anywhere near
        # the question: what it costs is the business's to say, not the manual's (docs/answers.md, "Refusal").
        covered, reason, confidence = False, "no_price_found", min(confidence, 0.5)
    signals: dict[str, Any] = {"foreign_names": foreign} if foreign else {}
    cpu.lap("diversify")
    if chunks and not degraded and not foreign:
        sentence_started = time.perf_counter()
        signals = sentence_signals(query=query, chunks=chunks, terms=terms, chunk_covered=covered, params=params,
                                   query_vector=query_vector)
        if signals:
            timings["sentences"] = _ms(sentence_started)
            # The chunk whose sentence answers goes first: a short chunk about three topics is as similar to each
            # question about one of them as a neighbour that mentions the same words.
            head = sorted(chunks[: params.sentence_chunks], key=lambda c: -(c.evidence_score or 0.0))
            chunks = head + chunks[params.sentence_chunks:]
            if not covered and reason == "low_similarity" and signals["value"] >= params.cover_sentence:
                covered, reason = True, "similar_sentence"
                confidence = max(confidence, coverage_confidence(
                    params.cover_threshold + signals["value"] - params.cover_sentence, params=params))
            elif (covered and top_similarity < params.cover_threshold + params.sentence_veto_margin
                  and signals["value"] < params.cover_sentence):
                # A short chunk just over the line whose sentences don't answer: "Is there a student discount?"
                # over "Shipping is free on orders over $100." is near the chunk only because the chunk is short.
                covered, reason = False, "low_sentence_evidence"
                confidence = min(confidence, 0.5)
            elif covered and signals["value"] < params.cover_sentence and (
                    _whole_names(signals.get("unknown_names", []), query) or signals.get("unknown_action")):
                # "Do you have a store in Boston?" over "We are a family-run shop in Madison.": a short chunk near the
                # question, a name it never mentions, and no sentence that answers. (Whole words only: the "E" of
                # "error E-4711" is part of a code.) Likewise "How do I track my order?" over "Your parcel should
                # arrive 2 days after you order": the thing to do is a word the texts never use.
                covered = False
                reason = "unknown_action" if signals.get("unknown_action") else "unknown_name"
                confidence = min(confidence, 0.5)
    cpu.lap("sentences")
    timings["total"] = _ms(started)
    return RetrievalResult(
        query=query, chunks=chunks, covered=covered, confidence=confidence,
        top_similarity=round(top_similarity, 4), term_coverage=round(term_coverage, 3), reason=reason,
        timings_ms=timings, degraded=degraded, candidates=candidates, signals=signals, cpu_ms=cpu.stages,
    )


def _whole_names(names: list[str], query: str) -> list[str]:
    """The names that stand as words of their own in the question, not inside a code or identifier ("E-4711")."""
    return [name for name in names if len(name) >= 2
            and re.search(rf"(?<![\w'’./:=_-]){re.escape(name)}(?![\w'’/:=_-]|\.\w)", query)]


class _StageClock:
    """The process CPU time each stage took (all threads: the embedding model runs its own), so latency figures
    from a busy machine can be read against the work done."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.process_time()

    def lap(self, stage: str) -> None:
        now = time.process_time()
        self.stages[stage] = round((now - self._last) * 1000, 2)
        self._last = now


# --- words -------------------------------------------------------------------------------------------------------

# What the answerer and the sentence signals call a word: stemmed (snowball, English), stop words and single letters
# left out.
_STEM_WORD = re.compile(r"[\w][\w'’.-]*", re.UNICODE)
_STEM_STOP = {
    "a", "an", "the", "and", "or", "but", "if", "then", "of", "to", "in", "on", "at", "for", "with", "by", "from",
    "about", "as", "into", "is", "are", "was", "were", "be", "been", "do", "does", "did", "have", "has", "had", "i",
    "me", "my", "we", "our", "you", "your", "it", "its", "this", "that", "these", "those", "can", "could", "should",
    "would", "will", "may", "might", "must", "what", "which", "who", "how", "when", "where", "why", "there", "here",
    "please", "not", "no", "any", "some", "all", "just", "so", "also", "than", "they", "them", "their",
    "one", "get", "use", "using", "need", "want", "way", "tell", "explain", "know", "make", "sure", "again",
    # Contractions of the words above, "until", "during", "something": "what's your e-mail" asks for "e-mail" only,
    # and "how long do I have to return something" for a duration; as content words they counted as words the
    # knowledge base never uses.
    "what's", "whats", "where's", "when's", "how's", "who's", "it's", "i'm", "i'd", "i've", "i'll", "that's",
    "there's", "you're", "we're", "let's", "until", "till", "during", "something", "anything", "someone", "anyone",
    "somebody", "anybody",
}
_ONE_LETTER_PREFIX = re.compile(r"^([a-z])-(?=[a-z]{3,}$)")
# A snowball stemmer keeps the word it works on in the object: shared between threads (answers run in a thread
# pool) it raised IndexError or returned wrong stems under load. One per thread.
_local = threading.local()


def stems(text: str) -> frozenset[str]:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import snowballstemmer

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    words = [w.strip(".-'’").lower().replace("’", "'") for w in _STEM_WORD.findall(text)]
    # "e-mail" is "email", "t-shirt" "tshirt": a one-letter prefix is written with and without its hyphen.
    words = [_ONE_LETTER_PREFIX.sub(r"\1", w) for w in words
             if w and w not in _STEM_STOP and (len(w) > 1 or w.isdigit())]
    return frozenset(stemmer.stemWords(words))


# Phrases customers and shops say for one word: "can I bring it back?" asks about returns, "Bring it back within 14
# days" is a returns policy, "when does customer service pick up the phone" asks about the phone. The question's phrase
# is read as the word (`question_stems`), and a sentence saying the phrase also says the word (`phrase_stems`).
_PHRASES = [
    (re.compile(r"\b(?:bring|brings|bringing|brought|take|takes|taking|took|send|sends|sending|sent)\s+"
                r"(?:(?:it|them|this|that|(?:the|an?|my|your|our)\s+[a-z]+|[a-z]+)\s+)?back\b", re.IGNORECASE), "return"),
    # A refund is what a returns policy gives ("Can I get a refund?", "my money back" over "We take returns for up to
    # 7 days"; the two words' vectors are 0.51 apart, under near_word_cosine), and not liking it, it not fitting or a
    # change of mind is why one returns it ("What if I don't like it?" over "Changed your mind? Bring it back ...").
    (re.compile(r"\brefund(?:s|ed|ing)?\b|\bmoney\s+back\b|\bchang(?:e|ed|es|ing)\s+(?:my|your|our|their)\s+minds?\b"
                r"|\b(?:don't|do not|didn't|did not)\s+like\s+(?:it|them)\b"
                r"|\b(?:doesn't|does not|don't|do not|didn't|did not)\s+fit\b", re.IGNORECASE), "return"),
    (re.compile(r"\b(?:pick|picks|picked|picking)\s+up\s+the\s+(?:phone|telephone)\b"
                r"|\b(?:answer|answers|answered|answering)\s+(?:the\s+)?(?:phones?|telephones?|calls)\b",
                re.IGNORECASE), "phone"),
]


def phrases_normalize(text: str) -> str:
    """The text with each phrase of `_PHRASES` replaced by its word ("can i bring it back" -> "can i return")."""
    for pattern, word in _PHRASES:
        text = pattern.sub(word, text)
    return text


def question_stems(query: str) -> frozenset[str]:
    """The question's content words, stemmed, its phrases read as their words (see _PHRASES)."""
    return stems(phrases_normalize(query))


def phrase_stems(text: str) -> frozenset[str]:
    """The words a text says in phrases ("Bring it back within 14 days": "return")."""
    words = [word for pattern, word in _PHRASES if pattern.search(text)]
    return stems(" ".join(words)) if words else frozenset()


# --- sentence-level coverage ---------------------------------------------------------------------------------------

# A sentence ends at "!", "?" or ";", and at "." before anything but a lower-case word: "open at 9 a.m. and close at
# 5 p.m." is one sentence.
_SENTENCE_BREAK = re.compile(r"(?<=[!?;])\s+(?=\S)|(?<=\.)\s+(?=[^\sa-z])|\n+")
# Times of day as small businesses write them: "9am", "9 a.m.", "17:00", "9 in the morning", "noon"; and a bare
# range ("9–5", "10-4") when the sentence also names days ("Saturday 9–5", "weekdays 10–4").
_CLOCK = re.compile(r"\b\d{1,2}(:\d\d)?\s?([ap]m\b|[ap]\.m\.)|\b\d{1,2}:\d\d\b"
                    r"|\b\d{1,2}\s+(in the (morning|afternoon|evening)|at night|o'clock)\b|\b(noon|midday|midnight)\b",
                    re.IGNORECASE)
_BARE_RANGE = re.compile(r"\b\d{1,2}(:\d\d)?\s?([–—-]|to|until)\s?\d{1,2}(:\d\d)?(\s?h)?\b", re.IGNORECASE)
# Days: the weekend ("Sat", "Saturdays", "Sunday closed") and the working week ("Mon–Fri", "Monday to Friday",
# "weekdays", "during the week"). A sentence naming them also says the words a customer asks with ("weekend",
# "weekday"), and the order prefers the sentence about the days the question asks about.
_WEEKEND = re.compile(r"(?i:\bsat\b|\b(saturdays?|sundays?|weekends?)\b)|\b(Sun|SUN)\b")
_WEEKEND_CASED = re.compile(r"\b(Sat|SAT|Sun|SUN)\b\.?|\b([Ss]aturdays?|[Ss]undays?|[Ww]eekends?)\b")
_WEEKDAYS = re.compile(r"\b(mon(day)?|tue(s(day)?)?|wed(nesday)?|thu(rs(day)?)?|fri(day)?)s?\b"
                       r"|\bweekdays?\b|\b(during|in) the week\b|\bworking days?\b", re.IGNORECASE)
_WEEKDAYS_CASED = re.compile(r"\b(Mon|Tue|Tues|Wed|Thu|Thurs|Fri)\b|\b([Mm]ondays?|[Tt]uesdays?|[Ww]ednesdays?"
                             r"|[Tt]hursdays?|[Ff]ridays?)\b|\b[Ww]eekdays?\b|(?i:\b(during|in) the week\b)")


class _OpeningTimes:
    """`search` like a compiled pattern: a time of day, or a bare range next to a day ("Saturday 9–5")."""

    @staticmethod
    def search(text: str) -> bool:
        return bool(_CLOCK.search(text) or (_BARE_RANGE.search(text) and _days_named(text)))


def _days_named(text: str) -> frozenset[str]:
    """Which kinds of day a text names: "weekend" (Saturday, Sunday), "weekday" (Monday to Friday)."""
    found = set()
    if _WEEKEND_CASED.search(text):
        found.add("weekend")
    if _WEEKDAYS_CASED.search(text):
        found.add("weekday")
    return frozenset(found)


# Values that answer a question without its words: "hello@shop.example" answers "what is your email address?".
_IMPLIED_WORDS = [
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "email mail address contact write reach"),
    (re.compile(r"(?<!\d)(\+?\d[\d ().-]{6,}\d)(?!\d)"), "phone call number contact reach"),
    (re.compile(r"[$€£]\s?\d|\d\s?(usd|eur|gbp|dollars?|euros?)\b", re.IGNORECASE), "price cost much pay"),
    (_OpeningTimes, "hours open close time"),
    (re.compile(r"https?://|www\.", re.IGNORECASE), "website site link online"),
    (_WEEKEND_CASED, "weekend saturday"),
    (_WEEKDAYS_CASED, "weekday week"),
]


# What a question asks for, and the value in a sentence that answers it: "How long is the returns window?" is
# answered by "within 30 days", "where do I send an email" by an e-mail address. When both sides agree, the words of
# the question that ask for the value ("how long", "send an email") count as found in that sentence — whatever
# digits the value has, and although the sentence never says "long" or "email". Where a pattern has groups named
# "ask...", only their words count ("when will my package arrive": "arrive", not "package").
_DURATION = re.compile(r"\b\d+\s*(-\s*)?(business |working |calendar )?(day|week|month|year|hour)s?\b"
                       r"|\b(a|one|two|three|four|five|six|seven|ten)\s+(business |working )?(day|week|month|year)s?\b",
                       re.IGNORECASE)
_CONTACT = re.compile(_IMPLIED_WORDS[0][0].pattern + "|" + _IMPLIED_WORDS[1][0].pattern)
# "free" is answered by an amount ("over $50") or by "no charge" in other words.
_FREE_VALUE = re.compile(r"[$€£]\s?\d|\bfree\b|\bno (\w+ )?(charge|fee|cost)s?\b", re.IGNORECASE)
# "Store hours?", "business hours", "opening times": the word before "hours" says whose hours they are, and asks with
# it (a shop's texts rarely call themselves a "store"); "phone hours" is not among them (see line_agreement). "Are you
# open today?" asks with "today" (or "tomorrow", "now"): the texts give the hours, never the date.
_ASKS_OPENING_TIMES = re.compile(
    r"\bwhat time\b|\bhow (late|early)\b|\b((store|shop|opening|business|office|trading|open) )?hours\b"
    r"|\bopening times\b|\b(?P<ask_open>open|close|closed)\b[\w' ]{0,12}?\b(?P<ask_day>today|tomorrow|tonight|now)\b"
    r"|\b(open|opening|close|closing|visit)\b"
    r"|\b(stop|come|drop|pop|swing) (by|in|over|round)\b", re.IGNORECASE)


class _DeliveryTime:
    """`search` like a compiled pattern: a duration in a sentence about getting an order ("Dispatch: within 3
    business days", "Your parcel should arrive 2 days after you order")."""

    @staticmethod
    def search(text: str) -> bool:
        return bool(_DURATION.search(text) and _DELIVERY_WORDS.search(text))


_DELIVERY_WORDS = re.compile(r"\b(ship\w*|deliver\w*|dispatch\w*|arriv\w*|parcels?|packages?|shipments?|orders?"
                             r"|post|posted|postage|courier|reach(es)? you)\b", re.IGNORECASE)
_WARRANTY = re.compile(r"\b(warrant(y|ies|ied)|guarantee[ds]?)\b|\brepair (it |them )?or replace\b",
                       re.IGNORECASE)
_ANSWER_TYPES = [
    # A time ago ("something I bought last week", "ordered 3 weeks ago", "yesterday") asks whether it is still within
    # a period: a sentence giving one answers it ("Returns accepted within 14 days"), whatever its digits.
    (re.compile(r"\b(?:(?:bought|purchased|ordered|got|received)\b[\w' ]{0,30}?\b)?"
                r"(?:last (?:week|month|year)|(?:a|an|one|two|three|four|five|six|\d+) (?:days?|weeks?|months?|years?)"
                r" ago|yesterday)\b", re.IGNORECASE), _DURATION),
    # The thing delivered, when the question asks how long until it comes ("How long until I get my order?", "when
    # does my package arrive"): a sentence giving a delivery time answers it however it names the thing (a shop
    # that writes "Dispatch: within 3 business days" never says "order" or "package"). Only with a delivery time: a
    # returns period is a duration too; and not in a question about returns or a warranty ("how long do I have to
    # return an order").
    (re.compile(r"^(?!.*\b(return|refund|exchang|warrant|guarantee))[^?]*?\b("
                r"how (long|soon|quick|quickly|fast|many (business |working )?(days|weeks))"
                r"|when (will|does|do|would|should|is|are)|until)\b[\w' ]{0,40}?"
                r"\b(?P<ask_thing>orders?|packages?|parcels?|shipments?|purchases?|deliver(y|ies))\b",
                re.IGNORECASE), _DeliveryTime),
    # "how long will it take to get here" asks for a delivery time although it names no order: said of the thing
    # coming ("get here", "arrive"), not of the customer.
    (re.compile(r"^(?!.*\b(return|refund|exchang|warrant|guarantee))[^?]*?\bhow (long|soon|quick|quickly|fast)\b"
                r"[\w' ]{0,40}?\b(?P<ask_coming>(get|gets|come|comes) (here|to (me|you|us))|arrive|arrives"
                r"|be delivered|reach (me|us))\b", re.IGNORECASE), _DeliveryTime),
    # "how long does it take": "take" asks with "how long" ("We take returns ..." is no answer by that word).
    (re.compile(r"\b(?P<ask_how>how long)\b[\w' ]{0,30}?\b(?P<ask_take>takes?)\b"
                r"|\bhow (long|fast|quick|quickly|soon|many (business |working )?(days|weeks|months|years))\b"
                r"|\buntil when\b|\bwithin how\b|\btime limit\b|\bdeadline\b"
                r"|\b(deliver\w*|shipping|dispatch|processing|turnaround|transit|wait\w*) (?P<ask_time>times?)\b"
                r"|\bwhen (will|does|do|would|can|should|is|are)\b[\w' ]{0,30}?"
                r"\b(?P<ask>arrive|arrives|get here|gets here|come|comes|be delivered|be shipped|ship|ships|receive"
                r"|receives)\b",
                re.IGNORECASE), _DURATION),
    (re.compile(r"\b(send|write)\b[\w ]{0,12}\be-?mail\b|\be-?mail( address)?\b", re.IGNORECASE),
     _IMPLIED_WORDS[0][0]),
    (re.compile(r"\b(phone( number)?|call|telephone|ring)\b", re.IGNORECASE), _IMPLIED_WORDS[1][0]),
    # Asking for a way to reach someone: an address or a number answers it.
    (re.compile(r"\b(get|keep|be) in touch\b|\bcustomer (service|support|care)\b|\bsupport\b",
                re.IGNORECASE), _CONTACT),
    (re.compile(r"\bhow much\b|\b(price|cost|costs|pay)\b", re.IGNORECASE), _IMPLIED_WORDS[2][0]),
    (re.compile(r"\bfree\b", re.IGNORECASE), _FREE_VALUE),
    # Opening times, and a visit ("can I stop by on Saturday?"): when the sentence says when.
    (_ASKS_OPENING_TIMES, _OpeningTimes),
    # Something broken, and whether it is covered ("my kettle broke, is it covered?", "how long is the kettle covered
    # for"): a warranty answers it ("Guarantee: 3 years on the kettle"), although it never says "broke" or "covered".
    (re.compile(r"\b(broke|broken|stopped working|stops working|quit working|not working|faulty|defective)\b"
                r"|\b(is|are)\b[\w' -]{0,30}?\bcovered\b|\bcovered (for|by)\b", re.IGNORECASE), _WARRANTY),
]


def _asked_words(match: re.Match[str]) -> str:
    """The words of a match that ask (its groups named "ask...", when one matched), else the whole match."""
    asked = [match.group(name) for name in match.re.groupindex if name.startswith("ask") and match.group(name)]
    return " ".join(asked) if asked else match.group(0)


def _holds(holds: Any, query: str, sentence: str) -> bool:
    """Does the sentence hold the kind of value the question asks for? Opening times only when they are the ones
    asked about: of the days asked about (day_agreement), and the shop's, not the phone line's (line_agreement)."""
    if not holds.search(sentence):
        return False
    return holds is not _OpeningTimes or (day_agreement(query, sentence) == 0 and line_agreement(query, sentence) == 0)


def answer_type_stems(query: str, sentence: str) -> frozenset[str]:
    """The question's words that ask for a kind of value the sentence holds (see _ANSWER_TYPES)."""
    found: set[str] = set()
    for asks, holds in _ANSWER_TYPES:
        if _holds(holds, query, sentence):
            for match in asks.finditer(query):
                found |= stems(_asked_words(match))
    return frozenset(found)


def answer_type_agreement(query: str, sentence: str) -> float:
    """The share of the kinds of value the question asks for (a duration, a phone number, hours ...) that the
    sentence holds; 0 when the question asks for none."""
    asked = [holds for asks, holds in _ANSWER_TYPES if asks.search(query)]
    if not asked:
        return 0.0
    return sum(1 for holds in asked if _holds(holds, query, sentence)) / len(asked)


def day_agreement(query: str, sentence: str) -> float:
    """-1 when the sentence is about other days than the question asks about: "Saturday hours?" over "Mon–Fri 9–5",
    and "how late are you open?" (a question that names no day asks about the working week) over "On Saturday we
    close at 5 p.m."; else 0."""
    named = _days_named(sentence)
    if not named:
        return 0.0
    asked = frozenset(({"weekend"} if _WEEKEND.search(query) else set())
                      | ({"weekday"} if _WEEKDAYS.search(query) else set())) or frozenset({"weekday"})
    return 0.0 if asked & named else -1.0


# Times that are a phone line's: a sentence holding a phone number, or saying "call" / "phone" / "ring".
_PHONE_LINE = re.compile(_IMPLIED_WORDS[1][0].pattern + r"|\b(call|calls|phone|phones|telephone|ring)\b", re.IGNORECASE)
_ASKS_PHONE = re.compile(r"\b(phone|phones|call|calls|calling|telephone|ring)\b", re.IGNORECASE)


# "How do I close my account?", "open a support ticket": opening or closing a thing, not opening times.
_OPENS_A_THING = re.compile(r"\b(open|close|opening|closing)\s+(a|an|my|your|our|this|that)\s+\w", re.IGNORECASE)


def line_agreement(query: str, sentence: str) -> float:
    """-1 when the question asks when the shop is open and the sentence's times are a phone line's ("Phone: (555)
    555-0100 (Mon–Fri, 9am–5pm)", "Call us 10–4 on weekdays") while the question says nothing of the phone; else 0.
    Phone hours and store hours are both times of day; "how late are you open" asks for the store's."""
    if (not _ASKS_OPENING_TIMES.search(query) or _ASKS_PHONE.search(phrases_normalize(query))
            or _OPENS_A_THING.search(query)):
        return 0.0
    return -1.0 if _OpeningTimes.search(sentence) and _PHONE_LINE.search(sentence) else 0.0


_SENTENCE_NAME_EXCEPTIONS = {"i", "i'm", "i've", "ok"}
_FAQ_QUESTION_WORDS = 20


def passage_sentences(text: str) -> list[str]:
    """Sentences and lines of a chunk; a question keeps the answer that follows it ("Q: ...?" + "A: ...", a
    question line and its answer line, "Changed your mind? Bring it back within 14 days.")."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    merged: list[tuple[str, bool]] = []  # (line, is a FAQ pair: kept whole, the question names the answer's topic)
    for line in lines:
        if merged and merged[-1][0].endswith("?") and (
                re.match(r"^(a|answer)\s*[:.)-]", line, re.IGNORECASE)
                or (_asks_then_answers(merged[-1]) and not line.endswith("?"))):
            merged[-1] = (f"{merged[-1][0]} {line}", True)
        elif merged and line[0].islower() and not re.search(r"[.!?:;]$", merged[-1][0]):  # a hard-wrapped line (PDF)
            merged[-1] = (f"{merged[-1][0]} {line}", merged[-1][1])
        else:
            merged.append((line, False))
    out = []
    for position, (line, pair) in enumerate(merged):
        if pair:
            out.append(line)
            continue
        if position + 1 < len(merged) and _is_heading(line):
            continue
        pieces = [piece.strip() for piece in _SENTENCE_BREAK.split(line) if piece.strip()]
        joined: list[str] = []
        for piece in pieces:
            if joined and joined[-1].endswith("?") and not piece.endswith("?") \
                    and len(joined[-1].split()) <= _FAQ_QUESTION_WORDS:
                joined[-1] = f"{joined[-1]} {piece}"
            else:
                joined.append(piece)
        out.extend(piece for piece in joined if len(piece.split()) >= 2)
    return out


def _is_heading(line: str) -> bool:
    """A short label (over the lines that follow: "Gift cards", "Returns & refunds:"): no sentence, no value. Scored
    on its own it is close to every question about its words ("Do you have a rewards card?")."""
    return (len(line.split()) <= 3 and not re.search(r"[.!?;]$|\d|@|\w:\s", line)
            and not _days_named(line))


def _asks_then_answers(previous: tuple[str, bool]) -> bool:
    """`previous` is a question line of its own, short, and not already paired."""
    text, pair = previous
    return not pair and text.endswith("?") and len(text.split()) <= _FAQ_QUESTION_WORDS


def _sentence_stems(sentence: str) -> frozenset[str]:
    found = set(stems(sentence)) | phrase_stems(sentence)
    for pattern, words in _IMPLIED_WORDS:
        if pattern.search(sentence):
            found |= stems(words)
    return frozenset(found)


# A question asking how to do something, or whether one may: its verb is what it asks about ("How do I track my
# order?", "Can I cancel my order?"). The subject is the customer: "Do you sell ...?" asks about a thing ("Do you
# offer free shipping?" over "Free delivery on orders of $40+" is answered though the text never says "offer").
_ASKS_TO_DO = re.compile(r"^(?:how (?:do|can|could|would|should|will) (?:i|we)|(?:can|could|may|do|should|shall)"
                         r" (?:i|we))\s+(?:still |also |just |now )?(?P<verb>[a-z]+)\b", re.IGNORECASE)


def asked_actions(query: str) -> list[str]:
    """The verbs of the asking sentences that ask how to do something or whether one may ("track", "cancel"), its
    phrases read as their words ("can I bring it back": "return")."""
    sentences = re.split(r"(?<=[.!?])\s+", asking_sentences(phrases_normalize(query)))
    return [match.group("verb").lower() for sentence in sentences if (match := _ASKS_TO_DO.match(sentence.strip()))]


# Nouns that ask for what the texts say about the other words ("what's the return policy", "shipping info"), and
# nouns for whatever the shop sells ("Can I return an item?"): a shop that never writes "policy" or "item" still
# answers with "Bring it back within 28 days".
_GENERIC_NOUNS = "policy policies rules terms conditions info information details item items thing things stuff"


def _asked_stems(question: frozenset[str]) -> frozenset[str]:
    """The question's stems without the generic nouns (_GENERIC_NOUNS) the knowledge base never uses, when other
    words are left."""
    generic = question & stems(_GENERIC_NOUNS)
    if not generic:
        return question
    vocabulary = _vocabulary()
    unused = frozenset(stem for stem in generic if stem not in vocabulary)
    return question - unused if question - unused else question


def sentence_signals(
    *, query: str, chunks: list[RetrievedChunk], terms: list[QueryTerm], chunk_covered: bool,
    params: RetrievalParams = DEFAULT_PARAMS, query_vector: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Score the sentences of the best few chunks against the question (see RetrievalParams). Sets each scored
    chunk's `sentence_score`; returns {} when there is nothing to score or the chunk rule already decided and the
    sentences are too many to score for free. `query_vector`: the question's embedding when the dense search
    already made it."""
    units = [(index, sentence) for index, chunk in enumerate(chunks[: params.sentence_chunks])
             for sentence in passage_sentences(chunk.text)]
    if not units or (chunk_covered and len(units) > params.sentence_always_max):
        return {}
    units = units[: params.sentence_max]
    from documents.sentence_vectors import workspace_text_cached

    question = _asked_stems(question_stems(query))
    try:
        from documents.sentence_vectors import sentence_vectors_get

        if query_vector is None:
            from documents.embedding import embedder

            query_vector = embedder().embed([query])[0]
        # Cached per workspace after their first use, in the process and with their chunks
        # (documents/sentence_vectors.py): the sentences of the chunks questions reach are embedded once.
        vectors = sentence_vectors_get(sentences=[sentence for _, sentence in units],
                                       chunk_ids=[chunks[index].chunk_id for index, _ in units])
    except Exception:  # the chunk-level decision stands
        logger.warning("sentence scoring unavailable", exc_info=True)
        return {}
    # Summed left to right in double precision, as the loop this replaced did: a dot product summed in another order
    # differs in the last bit, and evidence scores that tie exactly would then order differently.
    cosines = np.cumsum(vectors.astype(np.float64) * np.asarray(query_vector, dtype=np.float64), axis=1)[:, -1].tolist()
    lexical = unknown = 0.0
    unknown_names: list[str] = []
    unknown_action: list[str] = []
    ordering_lexical = [0.0] * len(units)
    if question:
        # A sentence's stems, like its vector, are cached per workspace (documents/sentence_vectors.py).
        known_stems = workspace_text_cached(kind=b"sentence-stems-5", texts=[sentence for _, sentence in units],
                                            compute=lambda texts: [_sentence_stems(text) for text in texts])
        sentence_stems = [found | answer_type_stems(query, sentence)
                          for found, (_, sentence) in zip(known_stems, units)]
        # Near words only when no sentence says every asked word itself: they cost an embedding of each new word in
        # a cold process (~2.3 ms of CPU each), and a direct question — most questions — doesn't need them.
        if not any(question <= found for found in sentence_stems):
            near = _near_words(query=query, question=question, units=units, sentence_stems=sentence_stems,
                               cosines=cosines, params=params)
            sentence_stems = [found | near.get(position, frozenset())
                              for position, found in enumerate(sentence_stems)]
        lexical = max(len(question & found) / len(question) for found in sentence_stems)
        # For the order, a sentence is read under its document's title and section: "Enter the new network name and
        # a password" under "Wi-Fi setup › Changing the network name and password" answers "How do I change the
        # Wi-Fi password?" better than "All your Wi-Fi names and passwords are erased" under "Resetting the router".
        context = workspace_text_cached(
            kind=b"stems", texts=[f"{chunk.title} {chunk.section}" for chunk in chunks[: params.sentence_chunks]],
            compute=lambda texts: [stems(text) for text in texts])
        ordering_lexical = [len(question & (found | context[index])) / len(question)
                            for (index, _), found in zip(units, sentence_stems)]
        # Words the knowledge base never uses ("Canada" when only delivery times are written down); a value that
        # implies a word (an e-mail address: "email") makes it known, and so does a near word in a scored sentence.
        vocabulary = _vocabulary()
        implied = frozenset().union(*sentence_stems)
        unknown = sum(1 for stem in question if stem not in vocabulary and stem not in implied) / len(question)
        # A name the knowledge base never mentions ("Netflix", "PayPal", "Canada") is asked about, not paraphrased.
        names = [word for word in re.findall(r"(?<!^)(?<![.!?]\s)\b[A-Za-z]*[A-Z][A-Za-z]*\b", query.strip())
                 if word.lower() not in _SENTENCE_NAME_EXCEPTIONS]
        # A function word ("How" after a pasted tag, "The") has no stem: it is never a name.
        unknown_names = [word for word in names
                         if (found := stems(word)) and not (found & vocabulary.keys()) and not (found & implied)]
        # What the customer asks to do ("How do I track ...", "Can I cancel ...") in a word the knowledge base never
        # uses, nor any scored sentence implies: the texts may mention the thing ("orders"), not doing that to it.
        unknown_action = [word for word in asked_actions(query)
                          if (found := stems(word)) and not (found & vocabulary.keys()) and not (found & implied)]
    best, best_unit = -1.0, 0
    for position, ((index, _sentence), cosine) in enumerate(zip(units, cosines)):
        chunk = chunks[index]
        chunk.sentence_score = cosine if chunk.sentence_score is None else max(chunk.sentence_score, cosine)
        evidence = (cosine + params.sentence_rank_lexical_weight * ordering_lexical[position]
                    + params.sentence_rank_type_weight * answer_type_agreement(query, units[position][1])
                    + params.sentence_rank_day_weight * (day_agreement(query, units[position][1])
                                                         + line_agreement(query, units[position][1])))
        chunk.sentence_evidence = (evidence if chunk.sentence_evidence is None
                                   else max(chunk.sentence_evidence, evidence))
        if cosine > best:
            best, best_unit = cosine, position
    value = best + params.sentence_lexical_weight * lexical - params.sentence_unknown_weight * unknown
    if question and (unknown_names or unknown_action):
        value = min(value, params.cover_sentence - 0.01)
    return {"sentence_similarity": round(best, 4), "lexical_agreement": round(lexical, 3),
            "unknown_words": round(unknown, 3), "unknown_names": unknown_names[:5],
            **({"unknown_action": unknown_action} if unknown_action else {}), "value": round(value, 4),
            "sentences": len(units),
            "best_sentence": units[best_unit][1][:200]}


def _near_words(
    *, query: str, question: frozenset[str], units: list[tuple[int, str]], sentence_stems: list[frozenset[str]],
    cosines: list[float], params: RetrievalParams,
) -> dict[int, frozenset[str]]:
    """The question's words that the few closest sentences say in another word: "delivery" in "Shipping takes 3
    days", "weekend" in "Saturday 9-5". A question word missing from such a sentence counts as found there when one of
    the sentence's words is at least `near_word_cosine` close to it (the embedding model's vectors of single words,
    cached per workspace and process). Returns {unit position: stems found so}."""
    if params.near_word_cosine >= 1.0:
        return {}
    closest = sorted(range(len(units)), key=lambda position: -cosines[position])[: params.near_word_sentences]
    asked = {stem: word for word in _plain_words(query) if (stem := next(iter(stems(word)), "")) in question}
    wanted: dict[int, tuple[list[str], list[str]]] = {}
    for position in closest:
        missing = [word for stem, word in asked.items() if stem not in sentence_stems[position]]
        words = [word for word in _plain_words(units[position][1]) if stems(word)]
        if missing and words:
            wanted[position] = (missing, words)
    if not wanted:
        return {}
    try:
        from documents.curated import word_vectors

        vectors = word_vectors({word for missing, words in wanted.values() for word in (*missing, *words)})
    except Exception:  # the exact words still count
        logger.warning("word vectors unavailable", exc_info=True)
        return {}
    found: dict[int, frozenset[str]] = {}
    for position, (missing, words) in wanted.items():
        matrix = np.stack([vectors[word] for word in words])
        near = [word for word in missing if float(np.max(matrix @ vectors[word])) >= params.near_word_cosine]
        if near:
            found[position] = stems(" ".join(near))
    return found


def _plain_words(text: str) -> list[str]:
    """The alphabetic words of a text, lower case, each once (no numbers, addresses or stop words)."""
    words = (word.lower() for word in re.findall(r"[A-Za-z][a-z]+", text))
    return list(dict.fromkeys(word for word in words if word not in _STEM_STOP))


# --- questions about money ------------------------------------------------------------------------------------------

# A question whose answer is a price: "how much does … cost", a price, a fee. "The cost of a lookup" (performance) is
# not: "cost" counts with "how much", "per <period or seat>", or a plan, license or subscription next to it. (Refunds,
# discounts, billing are answered in words — "a full refund within 30 days" — and are left to the other rules.)
_MONEY_ASK = re.compile(
    r"\bhow much (?:does|do|is|are|will|would)\b[^?]{0,60}\b(?:cost|costs|charge|charged|pay)\b"
    r"|\b(?:what(?:'s|’s| is| are)|tell me) (?:the |your )?(?:price|prices|pricing|fee|fees)\b"
    r"|\b(?:price|fee) (?:of|for)\b"
    r"|\b(?:cost|costs|pay)\b[^?]{0,30}\bper (?:month|year|user|seat|developer|license|licence)\b"
    r"|\b(?:plan|license|licence|subscription)\b[^?]{0,20}\b(?:cost|costs)\b",
    re.IGNORECASE)
# An amount, or words that say what it costs without one ("free", "no fee", "we do not charge").
_MONEY_VALUE = re.compile(r"[$€£¥]\s?\d|\d\s?(?:[$€£¥]|usd|eur|gbp|dollars?|euros?|pounds?)\b|\bfree\b"
                          r"|\bno (?:extra |additional )?(?:fee|charge|cost)s?\b|\b(?:do|does|will) not charge\b"
                          r"|\bat no (?:extra |additional )?cost\b|\bwithout charge\b",
                          re.IGNORECASE)


def money_asked(query: str) -> bool:
    """Does the asking sentence ask for a price?"""
    return bool(_MONEY_ASK.search(asking_sentences(query)))


# --- names the knowledge base never uses ---------------------------------------------------------------------------

_NAME_EXCEPTIONS = {"i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "hi", "hello", "hey", "thanks", "please"}


def asking_sentences(query: str) -> str:
    """The sentences that ask (ending in "?"), or the last sentence: a greeting or a story before them is context."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", (query or "").strip()) if s]
    asking = [s for s in sentences if s.rstrip().endswith("?")]
    return " ".join(asking[-2:] or sentences[-1:])


def foreign_names(query: str) -> list[str]:
    """Capitalised words of the asking sentence (not its first word) that are neither common English words (the
    embedder's vocabulary) nor used anywhere in the knowledge base: "Shopify", "QuickBooks", "Kendal" in a help
    centre that never names them. Common words ("Canada", "Excel", "Monday") are left to the similarity rules: a
    knowledge base may answer a question about them without naming them."""
    from documents.embedding import wordpiece_words

    # Code and quoted text are identifiers (`core.sshCommand`, "Notify me"): the lexical side's job.
    sentence = re.sub(r"`[^`]*`|\"[^\"]*\"|“[^”]*”|(?<!\w)'[^']*'(?!\w)", " ", asking_sentences(query))
    # Whole alphabetic words only: a word in an identifier ("LO-CK-920", "merge.conflictStyle") is not a name.
    words = re.findall(r"(?<![\w'’./:=_-])([A-Za-z]+(?:['’]s)?)(?![\w'’/:=_-]|\.\w)", sentence)
    candidates = list(dict.fromkeys(
        w for position, w in enumerate(words)
        if position > 0 and any(c.isupper() for c in w) and w.lower() not in _NAME_EXCEPTIONS))[:20]
    if not candidates:
        return []
    english = wordpiece_words()
    # "REI's" is REI; "PFCs" is the plural of PFC.
    bases = {w: re.sub(r"(?<=[A-Z])s$", "", re.sub(r"['’]s$", "", w)) for w in candidates}
    candidates = [w for w in candidates if bases[w].lower() not in english and w.lower() not in english]
    if not candidates:
        return []
    vocabulary = _vocabulary()
    unknown = [w for w in candidates if not any(stem in vocabulary for stem in stems(bases[w]) | stems(w))]
    unknown = list(dict.fromkeys(unknown))[:5]
    if unknown:
        # Used inside a longer term of the knowledge base ("sshcommand" in "core.sshcommand"): not foreign.
        lowered = [bases[w].lower() for w in unknown]
        inside = {word for word in lowered if len(word) >= 4 and any(word in term for term in vocabulary)}
        unknown = [w for w, low in zip(unknown, lowered) if low not in inside]
    return unknown


# --- typos -----------------------------------------------------------------------------------------------------

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
TYPO_MAX_LENGTH = 30


class _VocabularyCache:
    """Each workspace's lexemes with their chunk counts, at the lexical version they were read at: an LRU map
    (schema, workspace id) -> (version, vocabulary) holding at most `terms` lexemes in all, shared by threads."""

    def __init__(self, *, terms: int) -> None:
        self.terms = terms
        self._entries: OrderedDict[tuple[str, int], tuple[tuple[Any, ...], dict[str, int]]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], version: tuple[Any, ...]) -> dict[str, int] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, int], version: tuple[Any, ...], vocabulary: dict[str, int]) -> bool:
        """Keep it; False when it is larger than the whole budget (not kept)."""
        with self._lock:
            previous = self._entries.pop(key, None)
            self._held -= len(previous[1]) if previous else 0
            if len(vocabulary) > self.terms:
                return False
            self._entries[key] = (version, vocabulary)
            self._held += len(vocabulary)
            while self._held > self.terms:
                _, (_, gone) = self._entries.popitem(last=False)
                self._held -= len(gone)
            return True

    def __len__(self) -> int:
        return len(self._entries)


# The process's cache (created on first use with RETRIEVAL_VOCABULARY_CACHE_TERMS).
vocabulary_cache = process_singleton(lambda: _VocabularyCache(terms=settings.RETRIEVAL_VOCABULARY_CACHE_TERMS))


# What this retrieval's term lookup read (`knowledge_retrieve` opens the scope), per schema: the version that keys the
# vocabulary, without a query of its own, and a vocabulary too large for the cache, read once per retrieval.
_versions_seen: ContextVar[dict[Any, Any] | None] = ContextVar("lexical_versions_seen", default=None)


def _vocabulary() -> dict[str, int]:
    """The workspace's lexemes with their chunk counts, cached per process until its chunks change."""
    from documents.lexical import lexical_version, lexical_vocabulary

    schema_name = connection.schema_name
    seen = _versions_seen.get()
    version = seen.get(schema_name) if seen is not None else None
    if version is None:
        version = lexical_version()
        if seen is not None:
            seen[schema_name] = version
    if seen is not None and (schema_name, "vocabulary") in seen:
        return seen[(schema_name, "vocabulary")]
    key = (schema_name, int(getattr(getattr(connection, "tenant", None), "pk", None) or 0))
    cache = vocabulary_cache()
    vocabulary = cache.get(key, version)
    if vocabulary is None:
        vocabulary = lexical_vocabulary()
        if not cache.put(key, version, vocabulary) and seen is not None:
            seen[(schema_name, "vocabulary")] = vocabulary  # too large to keep: kept for this retrieval only
    return vocabulary


def query_typos_fix(query: str, *, params: RetrievalParams = DEFAULT_PARAMS) -> str:
    """Words the knowledge base never uses, one edit (a swapped, missing, extra or wrong letter) away from one it
    does use, are replaced by it: "how long does shpiping take" searches for "shipping". Words it knows, short
    words and words with no single near neighbour are left as they are."""
    from documents.embedding import wordpiece_words

    # An English word the knowledge base doesn't use is a question it may not answer ("refund" in a Linux manual is
    # not "redund"); only words that are not words are corrected.
    english = wordpiece_words()
    # A word with a one-letter prefix is tried whole ("e-amil" is "eamil", one swap from "email"), as stems() reads it.
    surfaces = {w: w for w in re.findall(r"(?<![a-z-])[a-z]-[a-z]{3,}(?![a-z-])", query.lower())
                if w.replace("-", "") not in english}
    # A word longer than any word is not a typo of one (and its edits cost ~1 s of CPU at 1,000 letters).
    words = {w for w in re.findall(r"[a-z]+", query.lower())
             if params.typo_min_length <= len(w) <= TYPO_MAX_LENGTH and w not in english}
    words |= {w.replace("-", "") for w in surfaces if params.typo_min_length <= len(w) - 1 <= TYPO_MAX_LENGTH}
    surface_of = {w.replace("-", ""): w for w in surfaces}
    vocabulary: dict[str, int] | None = None
    fixed = query
    # A question word mistyped ("whta's", "waht"): a whole word (not part of a code, an address or a name with a
    # hyphen: "HTE-4711", "yuo@example.com"), one swap from exactly one function word ("hwo" is "how" and "who": left
    # alone), no word itself, and not a word of the knowledge base ("AWS" is not "was" where the texts say AWS).
    short = sorted({w for w in re.findall(r"(?<![\w@.-])[a-z]+(?![\w@.-]|\.\w)", query.lower())
                    if 3 <= len(w) < params.typo_min_length and w not in english and w not in _STEM_STOP})
    for word in short:
        swaps = {candidate for candidate in _swaps(word) if candidate in _STEM_STOP}
        if len(swaps) != 1:
            continue
        vocabulary = vocabulary if vocabulary is not None else _vocabulary()
        if word in vocabulary or stems(word) & vocabulary.keys():
            continue
        fixed = re.sub(rf"(?<![\w@.-]){word}(?![\w@.-]|\.\w)", swaps.pop(), fixed, flags=re.IGNORECASE)
    for word in sorted(words):
        stem = next(iter(stems(word)), "")
        if not stem:
            continue
        vocabulary = vocabulary if vocabulary is not None else _vocabulary()
        if not vocabulary or stem in vocabulary or word in vocabulary:
            continue
        best: tuple[int, str] | None = None
        for candidate in _edits(word, substitutions=len(word) >= 8):
            candidate_stem = next(iter(stems(candidate)), "")
            df = vocabulary.get(candidate_stem, 0)
            if df and (best is None or df > best[0]):
                best = (df, candidate)
        if best is None:
            # The word the customer meant may be one the knowledge base doesn't use ("pohne" over "Call us ..."):
            # two swapped letters making exactly one English word is a typo too (a swap rarely makes another word).
            swaps = {candidate for candidate in _swaps(word) if candidate in english}
            if len(swaps) == 1:
                best = (0, swaps.pop())
        if best is not None:
            surface = surface_of.get(word)
            if surface is not None:
                fixed = re.sub(rf"(?<![\w-]){re.escape(surface)}(?![\w-])", best[1], fixed, flags=re.IGNORECASE)
            else:
                fixed = re.sub(rf"\b{word}\b", best[1], fixed, flags=re.IGNORECASE)
    return fixed


def _swaps(word: str) -> set[str]:
    return {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)} - {word}


def _edits(word: str, *, substitutions: bool) -> set[str]:
    """Swapped, missing and extra letters; a wrong letter only in long words (in short ones it makes another
    word: "refund" is not a typo of "redund")."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    edits = ({a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
             | {a + b[1:] for a, b in splits if b}
             | {a + c + b for a, b in splits for c in _ALPHABET})
    if substitutions:
        edits |= {a + c + b[1:] for a, b in splits if b for c in _ALPHABET}
    return edits - {word}


def coverage_decide(
    *, top_similarity: float, term_coverage: float, has_chunks: bool, degraded: str = "",
    params: RetrievalParams = DEFAULT_PARAMS,
) -> tuple[bool, str]:
    if not has_chunks:
        return False, "nothing_found"
    if degraded:
        # Without the dense signal only strong lexical evidence counts.
        covered = term_coverage >= params.lexical_only_terms
        return covered, "lexical_only" if covered else "low_term_coverage"
    if top_similarity >= params.cover_threshold:
        return True, "similar"
    return False, "low_similarity"


def coverage_confidence(top_similarity: float, *, params: RetrievalParams = DEFAULT_PARAMS) -> float:
    """A 0..1 reading of the top similarity: 0.5 at the coverage threshold, about 0.9 ten points above it."""
    value = 1.0 / (1.0 + math.exp(-(top_similarity - params.cover_threshold) / 0.045))
    return round(value, 3)


# --- dense -------------------------------------------------------------------------------------------------------


def dense_search(*, schema_name: str, query: str, limit: int) -> list[tuple[int, float]]:
    return _dense_search(schema_name=schema_name, query=query, limit=limit)[0]


def _dense_search(
    *, schema_name: str, query: str, limit: int, vector_version: tuple[int, str] | None = None,
) -> tuple[list[tuple[int, float]], list[float]]:
    """The nearest chunks and the question's embedding (the sentence signals reuse it). `vector_version`: the vector
    copy's version, read in `schema_name` during this question (see `resident_query`)."""
    from documents.embedding import embedder
    from documents.resident_vectors import resident_query
    from documents.vectors import vectors_query

    # The schema is passed explicitly: the vector store has no notion of a "current" workspace. A small workspace is
    # searched exactly from the copy in its schema (documents/resident_vectors.py), without loading an index here.
    embedding = list(embedder().embed([query])[0])
    hits = resident_query(schema_name=schema_name, embedding=embedding, limit=limit, version_read=vector_version)
    if hits is None:
        hits = vectors_query(schema_name=schema_name, embedding=embedding, limit=limit)
    return [(int(hit.chunk_id), float(hit.score)) for hit in hits], embedding


# --- full text ---------------------------------------------------------------------------------------------------

_SAFE_LEXEME = re.compile(r"^[\w.:/+#-]{1,60}$", re.UNICODE)
_TSV_ITEM = re.compile(r"'((?:[^']|'')+)'(?::([0-9A-D,]+))?")


@dataclass(frozen=True)
class QueryTerm:
    lexeme: str
    df: int
    idf: float
    term_id: int | None = None  # its row in the workspace's lexical index (None: no chunk uses it)


def _table() -> tuple[str, str]:
    from documents.models import Chunk, Document

    quote = connection.ops.quote_name
    return quote(Chunk._meta.db_table), quote(Document._meta.db_table)


def query_terms(query: str, *, params: RetrievalParams = DEFAULT_PARAMS) -> list[QueryTerm]:
    """The question's stemmed terms with their IDF in this workspace; terms in most chunks are left out."""
    return _query_terms(query, params=params)[0]


def _query_terms(query: str, *, params: RetrievalParams) -> tuple[list[QueryTerm], Any]:
    from documents.lexical import lexical_terms

    found, totals = lexical_terms(query=query)
    seen = _versions_seen.get()
    if seen is not None:
        seen[connection.schema_name] = totals.version
    total = totals.chunks
    terms = []
    for lexeme, term_id, df in found:  # a tsvector's lexemes are unique
        if total == 0:
            break
        if not _SAFE_LEXEME.match(lexeme):
            continue
        if df / total > params.common_term_df and total >= 20:
            continue
        # A word the knowledge base never uses stays in (df 0, the highest IDF): it finds nothing, but it counts
        # against coverage — "my internet is kind of weird" is not covered because one of its words is known.
        idf = math.log(1 + (total - df + 0.5) / (df + 0.5))
        terms.append(QueryTerm(lexeme, df, idf, term_id))
    return terms, totals


def lexical_search(
    *, query: str, params: RetrievalParams = DEFAULT_PARAMS, looked_up: tuple[list[QueryTerm], Any] | None = None,
) -> tuple[list[QueryTerm], list[tuple[int, float, frozenset]]]:
    """BM25 over the workspace's lexical index (documents/lexical.py), ranked by PostgreSQL. `looked_up`: what
    `_query_terms` returned for this query in this retrieval, if it ran already."""
    from documents.lexical import lexical_rank

    terms, totals = looked_up if looked_up is not None else _query_terms(query, params=params)
    searchable = [term for term in terms if term.df > 0 and term.term_id is not None]
    if not searchable:
        return terms, []
    hits = lexical_rank(terms=[(term.term_id, term.idf, term.lexeme) for term in searchable], totals=totals,
                        limit=params.lexical_candidates, k1=params.bm25_k1, b=params.bm25_b,
                        heading_weight=params.heading_weight)
    return terms, hits


def tsvector_parse(text: str) -> dict[str, tuple[int, int]]:
    """'lexeme':1A,5,7B ... -> {lexeme: (positions with weight A, other positions)}."""
    parsed: dict[str, tuple[int, int]] = {}
    for match in _TSV_ITEM.finditer(text or ""):
        lexeme = match.group(1).replace("''", "'")
        heading = body = 0
        for position in (match.group(2) or "").split(","):
            if not position:
                continue
            if position.endswith("A"):
                heading += 1
            else:
                body += 1
        if not match.group(2):
            body = 1
        parsed[lexeme] = (heading, body)
    return parsed


def bm25_score(
    rows: Sequence[tuple[int, str]], terms: list[QueryTerm], *, params: RetrievalParams = DEFAULT_PARAMS,
    average: float | None = None,
) -> list[tuple[int, float, frozenset]]:
    """BM25 on the body plus a capped title/heading credit, for each (chunk id, tsvector text), computed here from the
    tsvectors: what documents.lexical.lexical_rank computes in PostgreSQL (the tests hold one to the other). The
    average length is the workspace's (`average`), or the rows' own when not given."""
    parsed = [(chunk_id, tsvector_parse(text)) for chunk_id, text in rows]
    if not parsed:
        return []
    lengths = [sum(body for _, body in vector.values()) for _, vector in parsed]
    if average is None:
        average = max(1.0, sum(lengths) / len(lengths))
    k1, b = params.bm25_k1, params.bm25_b
    out = []
    for (chunk_id, vector), length in zip(parsed, lengths):
        score = 0.0
        matched = set()
        for term in terms:
            heading, body = vector.get(term.lexeme, (0, 0))
            if body:
                score += term.idf * body * (k1 + 1) / (body + k1 * (1 - b + b * length / average))
            if heading:
                score += params.heading_weight * term.idf
            if heading or body:
                matched.add(term.lexeme)
        if score > 0:
            out.append((chunk_id, score, frozenset(matched)))
    out.sort(key=lambda item: (-item[1], item[0]))
    return out


def _term_coverage(chunks: list[RetrievedChunk], terms: list[QueryTerm]) -> float:
    """Share of the question's IDF mass found in the given chunks (title, heading or body)."""
    total = sum(term.idf for term in terms)
    if not total:
        return 0.0
    found: set[str] = set()
    for chunk in chunks:
        found |= chunk.matched_terms
    return sum(term.idf for term in terms if term.lexeme in found) / total


# --- fusion, de-duplication, diversity ----------------------------------------------------------------------------


def fuse(
    *, dense: list[tuple[int, float]], lexical: list[tuple[int, float, frozenset]], terms: list[QueryTerm],
    params: RetrievalParams,
) -> list[RetrievedChunk]:
    wanted = {chunk_id for chunk_id, _ in dense} | {chunk_id for chunk_id, _, _ in lexical}
    if not wanted:
        return []
    # Only chunks of indexed documents: a vector whose chunk is gone, or whose document is being replaced, is
    # not evidence.
    chunks = _chunks_read(wanted, terms=terms)
    found: dict[int, RetrievedChunk] = {}
    rank = 0
    for chunk_id, similarity in dense:
        chunk = chunks.get(chunk_id)
        if chunk is None or chunk_id in found:
            continue
        rank += 1
        item = found[chunk_id] = chunk
        item.dense_score, item.dense_rank = similarity, rank
    rank = 0
    for chunk_id, score, matched in lexical:
        chunk = chunks.get(chunk_id)
        if chunk is None:
            continue
        rank += 1
        item = found.setdefault(chunk_id, chunk)
        item.lexical_score, item.lexical_rank, item.matched_terms = score, rank, matched
    if params.fusion == "convex":
        # A chunk the dense search did not return is at most as similar as the last one it did return.
        floor = min((item.dense_score for item in found.values() if item.dense_score is not None), default=0.0)
        top_lexical = max((item.lexical_score or 0.0 for item in found.values()), default=0.0) or 1.0
        for item in found.values():
            dense_part = item.dense_score if item.dense_score is not None else floor
            lexical_part = (item.lexical_score or 0.0) / top_lexical
            item.fused_score = params.convex_alpha * dense_part + (1 - params.convex_alpha) * lexical_part
    else:
        for item in found.values():
            fused = 0.0
            if item.dense_rank is not None:
                fused += params.weight_dense / (params.rrf_k + item.dense_rank)
            if item.lexical_rank is not None:
                fused += params.weight_lexical / (params.rrf_k + item.lexical_rank)
            item.fused_score = fused
    return sorted(found.values(), key=lambda c: (-c.fused_score, -(c.dense_score or 0.0), c.chunk_id))


def _chunks_read(chunk_ids: set[int], *, terms: Sequence[QueryTerm] = ()) -> dict[int, RetrievedChunk]:
    """The chunks of indexed documents among these ids, as retrieval results, each with the question's `terms` it
    holds (`matched_terms`, for the coverage decision; a lexical hit's BM25 match replaces it). One query, each id
    probed by primary key (LATERAL ... OFFSET 0 keeps it so): joined or filtered on the document's status, the
    planner, which rarely knows how few ids are asked for, walked every indexed document's chunks (24 ms at 10k
    chunks, 10x that at 100k), and model instances cost ~6 ms of CPU per question. The terms are probed per (chunk,
    term) pair by primary key too; read here, they cost no round trip of their own."""
    from documents.lexical import POSTING_TABLE
    from documents.models import Chunk, Document
    from documents.selectors import source_url_make

    quote = connection.ops.quote_name
    known = [(term.term_id, term.lexeme) for term in terms if term.term_id is not None]
    sql = f"""
        SELECT x.*, (SELECT array_agg(q.lexeme) FROM unnest(%s::bigint[], %s::text[]) AS q(term_id, lexeme)
                     JOIN {POSTING_TABLE} p ON p.term_id = q.term_id AND p.chunk_id = x.id)
        FROM unnest(%s::bigint[]) AS i(id) CROSS JOIN LATERAL (
            SELECT c.id, c.document_id, c.ordinal, d.title, d.original_name, c.heading_path, c.page, c.text,
                   d.source, d.source_url, c.anchor
            FROM {quote(Chunk._meta.db_table)} c JOIN {quote(Document._meta.db_table)} d ON d.id = c.document_id
            WHERE c.id = i.id AND d.status = 'indexed' OFFSET 0) x
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [[t for t, _ in known], [lexeme for _, lexeme in known], sorted(chunk_ids)])
        rows = cursor.fetchall()
    return {
        chunk_id: RetrievedChunk(
            chunk_id=chunk_id, document_id=document_id, ordinal=ordinal, title=title, filename=filename,
            section=section, page=page, text=text, matched_terms=frozenset(matched or ()),
            url=source_url_make(source=source, source_url=source_url or "", anchor=anchor or ""))
        for chunk_id, document_id, ordinal, title, filename, section, page, text, source, source_url, anchor, matched
        in rows
    }


_WORD = re.compile(r"\w+", re.UNICODE)


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def diversify(
    candidates: list[RetrievedChunk], *, limit: int, params: RetrievalParams = DEFAULT_PARAMS
) -> list[RetrievedChunk]:
    """Best first; near-duplicates dropped; at most `per_section` per section until other sections run out."""
    chosen: list[RetrievedChunk] = []
    deferred: list[RetrievedChunk] = []
    seen_shingles: list[set] = []
    per_section: dict[tuple[int, str], int] = {}
    for candidate in candidates:
        if len(chosen) >= limit:
            break
        shingles = _shingles(candidate.text)
        if any(_jaccard(shingles, other) >= params.duplicate_jaccard for other in seen_shingles):
            continue
        key = (candidate.document_id, candidate.section)
        if per_section.get(key, 0) >= params.per_section:
            deferred.append(candidate)
            continue
        per_section[key] = per_section.get(key, 0) + 1
        seen_shingles.append(shingles)
        chosen.append(candidate)
    for candidate in deferred:
        if len(chosen) >= limit:
            break
        chosen.append(candidate)
    return chosen


def chunks_near_duplicate(a: str, b: str, *, params: RetrievalParams = DEFAULT_PARAMS) -> bool:
    """Two passages that say the same thing (the rule `diversify` drops near-duplicates by)."""
    return _jaccard(_shingles(a), _shingles(b)) >= params.duplicate_jaccard


def chunk_dashboard_url(*, document_id: int, ordinal: int) -> str:
    """The passage in the dashboard (staff only): the document's page, showing and anchored at this chunk. A path on
    the workspace's own host, so it never leads into another workspace."""
    from django.urls import reverse

    return f"{reverse('knowledge-detail', args=[document_id])}?chunk={ordinal}#chunk-{ordinal}"


def _jaccard(a: set, b: set) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


# --- follow-up questions -----------------------------------------------------------------------------------------

_FOLLOW_UP_START = re.compile(
    r"^\s*(and|or|but|also|so|then|plus|what about|how about|what if|same for|and if|as for|else)\b", re.IGNORECASE
)
_ANAPHORA = {"it", "its", "that", "this", "those", "these", "them", "they", "their", "there", "one", "ones", "same",
             "such", "he", "she", "him", "her", "former", "latter"}
_STOPWORDS = {
    "a", "an", "the", "and", "or", "but", "so", "if", "then", "of", "to", "in", "on", "at", "for", "with", "by", "from",
    "about", "as", "into", "is", "are", "was", "were", "be", "been", "being", "do", "does", "did", "doing", "have",
    "has", "had", "i", "me", "my", "we", "our", "you", "your", "can", "could", "should", "would", "will", "shall",
    "may", "might", "must", "what", "which", "who", "whom", "how", "when", "where", "why", "there", "here", "also",
    "please", "thanks", "thank", "ok", "okay", "yes", "no", "not", "any", "some", "all", "just", "too", "very",
    "again", "else", "more", "less", "than", "get", "got", "make", "use", "using", "used", "need", "want", "like",
    "know", "tell", "explain", "same", "plus", "way", "ways", "thing", "things",
} | _ANAPHORA
CUSTOMER_ROLES = {"customer", "user", "human", "visitor"}
MAX_REWRITTEN_CHARS = 600


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())]


def question_is_follow_up(question: str) -> bool:
    """Does the question lean on an earlier one ("and on a replica?", "how do I configure it?")?"""
    words = _WORD.findall(question.lower())
    content = content_words(question)
    if not words:
        return False
    if _FOLLOW_UP_START.match(question):
        return True
    if len(content) <= 1:
        return True
    return bool(_ANAPHORA & set(words)) and len(content) <= 3


def retrieval_query_build(*, question: str, history: Sequence[tuple[str, str]] | None = None) -> str:
    """The text to search for: the question, combined with the previous customer question when it is a follow-up.

    History is folded from the oldest customer turn on, so a chain of follow-ups keeps its topic; no LLM is needed.
    """
    question = " ".join((question or "").split())
    running = ""
    for role, text in history or ():
        if str(role).lower() not in CUSTOMER_ROLES:
            continue
        turn = " ".join(str(text or "").split())
        if not turn:
            continue
        running = _combine(running, turn) if running and question_is_follow_up(turn) else turn
    if running and question_is_follow_up(question):
        return _combine(running, question)
    return question


# A second question joined to the first: "..., and who pays return shipping?", "...? Do you ship to Canada?",
# "... and do you ...". Only before a word that opens a question, so "return and exchange" stays one part.
# A word opening a question: a wh-word, or an auxiliary followed by a word that is not "not" ("do you", "is there",
# "do gift cards"; not "... and are not needed anymore").
_QUESTION_OPENER = (r"(?:(?:who|whom|whose|what|how|when|where|which|why)\b|(?:do|does|did|is|are|was|were|can|"
                    r"could|will|would|should|may|am|have|has)\s+(?!not\b|n't\b)[a-z]\w*\b)")
_PART_BREAK = re.compile(
    rf"\?\s+(?=\S)|[,;]\s*(?:(?:and|but|also|plus|or)\s+)?(?={_QUESTION_OPENER})|\s+and\s+(?={_QUESTION_OPENER})",
    re.IGNORECASE)
_OPENS_QUESTION = re.compile(rf"^{_QUESTION_OPENER}", re.IGNORECASE)
MAX_QUESTION_PARTS = 3


def question_parts_split(question: str) -> list[str]:
    """The separate questions in one message ("How long do I have to return an item, and who pays return
    shipping?" -> two), each ending in "?"; the question itself when it has one part. A piece without a
    content word ("..., and why?") stays with its neighbour; more than MAX_QUESTION_PARTS pieces are not split."""
    question = " ".join((question or "").split())
    pieces = [piece.strip(" ,;") for piece in _PART_BREAK.split(question) if piece and piece.strip(" ,;?")]
    parts: list[str] = []
    for piece in pieces:
        if parts and not content_words(piece):
            parts[-1] = f"{parts[-1].rstrip('?')}, {piece}"
        else:
            parts.append(piece)
    if len(parts) > 1 and not content_words(parts[0]):
        parts[1] = f"{parts[0].rstrip('?')}, {parts[1]}"
        parts.pop(0)
    if not 2 <= len(parts) <= MAX_QUESTION_PARTS:
        return [question]
    # Every part must be a question of its own: "My log files keep growing; what rotates them?" and "I changed the
    # GRUB settings; how do I apply them?" are one question with its context.
    if not all(_OPENS_QUESTION.match(part) for part in parts):
        return [question]
    parts = [part if part.endswith("?") else f"{part.rstrip('.!')}?" for part in parts]
    return [part[0].upper() + part[1:] for part in parts]


def _combine(previous: str, follow_up: str) -> str:
    combined = f"{previous} {follow_up}"
    if len(combined) <= MAX_REWRITTEN_CHARS:
        return combined
    return combined[-MAX_REWRITTEN_CHARS:].split(" ", 1)[-1]


# --- helpers -----------------------------------------------------------------------------------------------------


def snippet_make(text: str, *, around: str | None = None, size: int = 240) -> str:
    """A short excerpt of a chunk for a citation, centred on `around` when given."""
    clean = " ".join(text.split())
    if len(clean) <= size:
        return clean
    start = 0
    if around:
        at = clean.find(" ".join(around.split())[:60])
        if at > 0:
            start = max(0, at - size // 4)
    piece = clean[start:start + size]
    if start > 0:
        piece = "…" + piece.split(" ", 1)[-1]
    if start + size < len(clean):
        piece = piece.rsplit(" ", 1)[0] + "…"
    return piece


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def params_with(**changes: Any) -> RetrievalParams:
    return replace(DEFAULT_PARAMS, **changes)

