"""Follow-up suggestions after an answer (docs/widget.md "Follow-up suggestions"): up to 3 of the widget's starter
questions (staff-written or approved suggestions; both live in `Embed.starter_questions`), closest to the question
just answered by shared content words, never one already asked in the conversation, and only questions the knowledge
base answers.

"Answers" is measured, not assumed: each pool question goes through retrieval's coverage decision
(documents.retrieval.knowledge_retrieve(...).covered, the same one the assistant declines by) when the widget is saved,
and again lazily when the workspace's documents changed since, or the check is older than COVERAGE_TTL. The result
is stored on the embed (`question_coverage`). Picking follow-ups costs no model call: a word-overlap score on at
most 6 questions, computed when the widget asks for them after `agent_completed` (off the answer's path).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone

from chat.models import Conversation, MessageRole
from embeds.models import Embed

FOLLOWUPS_MAX = 3
COVERAGE_TTL = timedelta(days=1)
# On the visitor's path a stale check runs at most this often per widget: while a document indexes its change time
# moves every second, and each refresh is up to 6 retrievals (an anonymous request must not buy that at will).
VISITOR_REFRESH_MIN_SECONDS = 30

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words that say nothing about the topic (question words, auxiliaries, pronouns, articles, prepositions).
_STOPWORDS = frozenset("""
a an the and or but if then so to of in on at by for with from into about as is are was were be been being am do
does did doing have has had having can could will would shall should may might must i me my mine we us our you your
yours he him his she her it its they them their this that these those what which who whom whose when where why how
there here not no yes any some all each more most much many very just also too than up down out over again get got
please tell know want need like let make one s t
""".split())


def _stem(word: str) -> str:
    """A light suffix strip so "returns", "returned" and "returning" meet (no dictionary: cheap and predictable)."""
    for suffix in ("ingly", "edly", "ings", "ing", "ies", "ied", "ers", "er", "es", "ed", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
    return word


def question_terms(text: str) -> frozenset[str]:
    """The stemmed content words of a question."""
    return frozenset(_stem(word) for word in (w.casefold() for w in _WORD.findall(text or ""))
                     if word not in _STOPWORDS and len(word) > 1)


def question_similarity(first: str, second: str) -> float:
    """Shared content words over all content words (Jaccard), 0..1."""
    a, b = question_terms(first), question_terms(second)
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def knowledge_stamp() -> str:
    """Changes whenever the workspace's documents do (added, re-indexed, edited or deleted)."""
    from documents.models import Document

    figures = Document.objects.aggregate(count=Count("id"), last=Max("updated_at"))
    last = figures["last"].isoformat() if figures["last"] else "-"
    return f"{figures['count']}:{last}"


def _question_answerable(question: str) -> bool | None:
    """None when retrieval ran degraded (the embedder or an index unavailable): no verdict to keep."""
    from documents.retrieval import knowledge_retrieve

    result = knowledge_retrieve(query=question)
    return None if result.degraded else bool(result.covered)


def _stale(entry: Any, *, stamp: str, now: datetime) -> bool:
    if not isinstance(entry, dict) or entry.get("knowledge") != stamp:
        return True
    try:
        checked = datetime.fromisoformat(str(entry.get("checked_at")))
    except ValueError:
        return True
    return now - checked > COVERAGE_TTL


def question_coverage_refresh(*, embed: Embed, force: bool = False) -> dict[str, dict[str, Any]]:
    """Check the pool questions whose check is missing or stale (all with `force`) against the knowledge base and
    store the result on the embed; questions no longer in the pool are forgotten. Returns the coverage."""
    now = timezone.now()
    stamp = knowledge_stamp()
    old = embed.question_coverage if isinstance(embed.question_coverage, dict) else {}
    coverage: dict[str, dict[str, Any]] = {}
    checked = False
    for question in embed.starter_questions or []:
        key = question.casefold()
        entry = old.get(key)
        if force or _stale(entry, stamp=stamp, now=now):
            answerable = _question_answerable(question)
            if answerable is None:  # degraded: keep the last verdict (or none), checked again next time
                entry = {**(entry if isinstance(entry, dict) else {"answerable": False}), "knowledge": ""}
            else:
                entry = {"answerable": answerable, "checked_at": now.isoformat(), "knowledge": stamp}
            checked = True
        coverage[key] = entry
    if checked or coverage != old:
        Embed.objects.filter(pk=embed.pk).update(question_coverage=coverage)
        embed.question_coverage = coverage
    return coverage


def _refresh_due(embed: Embed, coverage: dict[str, Any]) -> bool:
    stamp, now = knowledge_stamp(), timezone.now()
    return any(_stale(coverage.get(question.casefold()), stamp=stamp, now=now)
               for question in embed.starter_questions or [])


def conversation_followups_suggest(*, embed: Embed, conversation: Conversation,
                                   limit: int = FOLLOWUPS_MAX) -> list[str]:
    """Follow-ups to offer under the conversation's last answer: [] when the widget doesn't show them or the last
    answer is not the assistant's answer (a decline gets the starter chips instead; an agent's reply gets none)."""
    if not embed.show_followups or not embed.starter_questions:
        return []
    last = conversation.messages.exclude(role__in=[MessageRole.SYSTEM, MessageRole.NOTE]).order_by("-id").first()
    if last is None or last.role != MessageRole.ASSISTANT or last.answered is not True:
        return []
    asked_messages = list(conversation.messages.filter(role=MessageRole.CUSTOMER).order_by("id")
                          .values_list("content", flat=True))
    if not asked_messages:
        return []
    question = asked_messages[-1]
    asked = {" ".join(text.split()).casefold() for text in asked_messages}
    coverage = embed.question_coverage if isinstance(embed.question_coverage, dict) else {}
    if _refresh_due(embed, coverage) and cache.add(
            f"followups:refresh:{connection.schema_name}:{embed.pk}", 1, VISITOR_REFRESH_MIN_SECONDS):
        coverage = question_coverage_refresh(embed=embed)
    candidates = [
        (question_similarity(question, pool_question), position, pool_question)
        for position, pool_question in enumerate(embed.starter_questions)
        if pool_question.casefold() not in asked and (coverage.get(pool_question.casefold()) or {}).get("answerable")
    ]
    candidates.sort(key=lambda item: (-item[0], item[1]))
    return [pool_question for _score, _position, pool_question in candidates[:limit]]
