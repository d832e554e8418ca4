"""The spend spike alert (tenants.billing.spend_spike_watch): credits spent by a workspace in one hour past
SPEND_SPIKE_MULTIPLE times its hourly average of the previous day (and at least SPEND_SPIKE_MIN_ANSWERS) e-mail the
owners once that hour and leave an audit entry; a steady workspace, or another workspace, hears nothing."""
from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from accounts.models import AuditEntry
from accounts.services import workspace_signup
from tenants import billing
from tests.factories import PASSWORD, WorkspaceWithOwner, unique_slug


def workspace_on(plan: str) -> WorkspaceWithOwner:
    owner, result = workspace_signup(email=f"owner-{secrets.token_hex(4)}@example.test", password=PASSWORD,
                                     workspace_name="Spike Co", slug=unique_slug("spike"), plan=plan)
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def spend(ws: WorkspaceWithOwner, count: int, now: datetime) -> None:
    for _ in range(count):
        billing.credits_consume(workspace=ws.workspace, reference=f"message:{secrets.token_hex(6)}", now=now)


def spike_mails(mailoutbox, ws: WorkspaceWithOwner) -> list:
    return [m for m in mailoutbox if "unusual spending" in m.subject and m.to == [ws.owner.email]]


def test_an_hour_of_unusual_spending_alerts_the_owners_once(settings, mailoutbox):
    settings.SPEND_SPIKE_MULTIPLE, settings.SPEND_SPIKE_MIN_ANSWERS = 3.0, 5
    ws, steady = workspace_on("pro"), workspace_on("pro")
    # Mid-period instants in the past, in whole hours of their own (the test's Redis counters are per hour).
    base = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=3)
    spend(ws, 4, base - timedelta(hours=2))  # the previous day: 4 answers in all -> average 1/6 an hour
    spend(ws, 4, base)
    assert spike_mails(mailoutbox, ws) == []  # under the minimum
    spend(ws, 1, base)
    [mail] = spike_mails(mailoutbox, ws)
    assert "5 answers" in mail.subject
    spend(ws, 10, base)
    assert len(spike_mails(mailoutbox, ws)) == 1  # once an hour
    entry = AuditEntry.objects.get(workspace=ws.workspace, action="billing.spend_spike")
    assert entry.data["spent"] == 5

    # A workspace that spends the same every hour is not spiking.
    for hours_ago in range(24, 0, -1):
        spend(steady, 2, base - timedelta(hours=hours_ago))
    settings.SPEND_SPIKE_MIN_ANSWERS = 1
    spend(steady, 5, base)
    assert spike_mails(mailoutbox, steady) == []
