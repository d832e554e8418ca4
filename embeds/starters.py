"""Starter question suggestions for a widget, drawn from what its customers ask (docs/widget.md "Starter
questions"). The widget sits below analytics (STYLE.md floors), so analytics registers the function that reads its
clustered top questions (analytics.selectors.starter_question_candidates) and embeds only asks it. Staff approve a
suggestion by adding it to the widget's starter questions (embed_update)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embeds.models import Embed

# (embed_id) -> [{"question", "count", "answered_rate", "cluster_id"}], best first
StarterCandidates = Callable[..., list[dict[str, Any]]]
_candidates: list[StarterCandidates] = []


def starter_candidates_register(function: StarterCandidates) -> None:
    if function not in _candidates:
        _candidates.append(function)


def starter_questions_suggest(*, embed: Embed, limit: int = 6) -> list[dict[str, Any]]:
    """Questions this widget's customers ask often and the knowledge base answers, minus those already shown."""
    taken = {question.casefold() for question in embed.starter_questions or []}
    suggestions: list[dict[str, Any]] = []
    for function in _candidates:
        for candidate in function(embed_id=embed.pk):
            question = str(candidate.get("question") or "").strip()
            if question and question.casefold() not in taken:
                taken.add(question.casefold())
                suggestions.append({**candidate, "question": question})
    return suggestions[:limit]
