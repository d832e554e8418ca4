"""The dashboard home's reads: the set-up checklist (ticked from the workspace's real state) and, once the widget is
live on a site, the last seven days at a glance. docs/analytics-dashboard.md ("Home") says what each item means.

One query (`_figures`). Analytics sits on the top floor, so it may read every app's tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.urls import reverse
from django.utils import timezone

from accounts.roles import role_has_permission
from analytics import sql
from chat.models import Conversation, ConversationStatus, Message, MessageRole
from documents.models import Document, DocumentStatus
from embeds.models import Embed

GLANCE_DAYS = 7


@dataclass(frozen=True)
class ChecklistStep:
    key: str
    title: str
    done: bool
    detail: str
    action_label: str = ""
    action_url: str = ""


@dataclass(frozen=True)
class GlanceFigure:
    key: str
    label: str
    value: str
    url: str = ""


@dataclass
class HomeState:
    steps: list[ChecklistStep] = field(default_factory=list)
    live: bool = False
    glance: list[GlanceFigure] = field(default_factory=list)
    since: datetime | None = None

    @property
    def done_count(self) -> int:
        return sum(1 for step in self.steps if step.done)

    @property
    def complete(self) -> bool:
        return all(step.done for step in self.steps)


def _figures(*, workspace: Any, since: datetime) -> dict[str, Any]:
    """Everything the home needs, in one statement: the workspace's schema (documents, messages, widgets, events,
    conversations) and, through the search path, public (its domains, members and invitations).

    "Seen on a site": a widget opened on an origin whose host is none of the workspace's own hosts (staff trying the
    widget on the dashboard's host don't count)."""
    from accounts.models import Invitation, Membership
    from tenants.models import Domain

    document = Document._meta.db_table
    message = Message._meta.db_table
    embed = Embed._meta.db_table
    conversation = Conversation._meta.db_table
    domain, membership, invitation = (Domain._meta.db_table, Membership._meta.db_table, Invitation._meta.db_table)
    query = f"""
        WITH recent AS (
            SELECT
                count(*) FILTER (WHERE e.kind = 'question_asked') AS questions,
                count(*) FILTER (WHERE e.kind = 'answer_completed') AS answers,
                count(*) FILTER (WHERE e.kind = 'answer_completed' AND e.outcome IN ('answered', 'low_confidence'))
                    AS answered,
                count(DISTINCT e.outcome || '|' || e.question_hash) FILTER (
                    WHERE e.kind = 'answer_completed' AND e.outcome IN ('declined', 'low_confidence')
                    AND e.question_hash <> '') AS to_review
            FROM {sql.EVENT} e
            WHERE e.kind IN ('question_asked', 'answer_completed') AND e.occurred_at >= %(since)s
        )
        SELECT
            (SELECT count(*) FROM {document}) AS documents,
            (SELECT count(*) FROM {document} WHERE status = %(indexed)s) AS indexed,
            (SELECT count(*) FROM {document} WHERE status = %(failed)s) AS failed,
            EXISTS (SELECT 1 FROM {message} WHERE role = %(customer)s) AS tried,
            (SELECT count(*) FROM {embed}) AS widgets,
            EXISTS (
                SELECT 1 FROM {sql.EVENT} o WHERE o.kind = 'widget_opened' AND o.origin <> ''
                AND lower(substring(o.origin FROM '^[a-zA-Z][a-zA-Z0-9+.-]*://([^:/]+)')) NOT IN (
                    SELECT lower(d.domain) FROM {domain} d WHERE d.tenant_id = %(workspace)s)
            ) AS seen,
            (SELECT count(*) FROM {conversation} WHERE status = %(waiting)s) AS waiting,
            ((SELECT count(*) FROM {membership} WHERE workspace_id = %(workspace)s) > 1
             OR EXISTS (SELECT 1 FROM {invitation} WHERE workspace_id = %(workspace)s AND revoked_at IS NULL))
                AS team,
            recent.questions, recent.answers, recent.answered, recent.to_review
        FROM recent
    """
    with connection.cursor() as cursor:
        cursor.execute(query, {"since": since, "indexed": DocumentStatus.INDEXED, "failed": DocumentStatus.FAILED,
                               "customer": MessageRole.CUSTOMER, "waiting": ConversationStatus.WAITING,
                               "workspace": workspace.pk})
        columns = [column.name for column in cursor.description]
        return dict(zip(columns, cursor.fetchone()))


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def workspace_home_state(*, workspace: Any, role: str, now: datetime | None = None) -> HomeState:
    """The checklist and the week at a glance for a member with `role`: steps a role can't see (the team, for a
    viewer) are left out, and actions only link where the role may take them."""
    now = now or timezone.now()
    since = now - timedelta(days=GLANCE_DAYS)
    figures = _figures(workspace=workspace, since=since)

    def can(permission: str) -> bool:
        return role_has_permission(role, permission)

    documents, indexed = figures["documents"], figures["indexed"]
    if indexed:
        knowledge_detail = _plural(indexed, "document indexed", "documents indexed")
    elif documents:
        knowledge_detail = f"{_plural(documents, 'document', 'documents')} added, none indexed yet"
    else:
        knowledge_detail = "Upload manuals, FAQs or policies, or import a web page."
    steps = [
        ChecklistStep("knowledge", "Add your knowledge", bool(indexed), knowledge_detail,
                      *(("Add knowledge", reverse("knowledge")) if can("knowledge.manage") else ("", ""))),
        ChecklistStep("tried", "Ask your assistant a question", bool(figures["tried"]),
                      "A question has been asked." if figures["tried"]
                      else "Try it the way a customer would, and see the answer and its sources.",
                      *(("Try it", reverse("conversation-try-start")) if can("conversations.reply") else ("", ""))),
        ChecklistStep("widget", "Create a widget", bool(figures["widgets"]),
                      _plural(figures["widgets"], "widget", "widgets") if figures["widgets"]
                      else "Choose its colours, greeting and the websites allowed to show it.",
                      *(("Create a widget", reverse("widget-create")) if can("widgets.manage") else ("", ""))),
        ChecklistStep("seen", "Put the widget on your website", bool(figures["seen"]),
                      "The widget has opened on your website." if figures["seen"]
                      else "Paste the widget's snippet into your site; this ticks when it first opens there.",
                      *(("Get the snippet", reverse("widgets")) if figures["widgets"] and can("widgets.view")
                        else ("", ""))),
    ]
    if can("team.view"):
        invited = bool(figures["team"])
        steps.append(ChecklistStep("team", "Invite a teammate", invited,
                                   "Someone else is on the team." if invited
                                   else "Agents answer customers who ask for a person.",
                                   *(("Invite", reverse("team")) if can("team.manage") else ("", ""))))
    state = HomeState(steps=steps, live=bool(figures["seen"]), since=since)
    if state.live:
        answers, answered = figures["answers"], figures["answered"]
        share = "—" if not answers else f"{round(100 * answered / answers)}%"
        analytics_url = (f"{reverse('analytics')}?{urlencode({'start': since.replace(microsecond=0).isoformat()})}"
                         if can("analytics.view") else "")
        state.glance = [
            GlanceFigure("questions", "Questions", str(figures["questions"]), analytics_url),
            GlanceFigure("answered", "Answered from your knowledge", share, analytics_url),
            GlanceFigure("waiting", "Waiting for a person", str(figures["waiting"]),
                         reverse("inbox") if can("conversations.handle") else ""),
            GlanceFigure("to_review", "Unanswered to review", str(figures["to_review"]),
                         f"{analytics_url}#unanswered-h" if analytics_url else ""),
            GlanceFigure("ingestion", "Ingestion problems", str(figures["failed"]),
                         reverse("knowledge-failed") if can("knowledge.view") else ""),
        ]
    return state
