"""Operator commands of billing (PRODUCT.md's contract): `usage_report` and `grant_credits`, run as real processes;
with `--json` they print JSON and nothing else, errors in the one error shape with exit status 1."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from accounts.models import AuditEntry
from tenants import billing
from tenants.models import LedgerEntry, Subscription
from tests.tenants.test_billing import workspace_on
from tests.tenants.test_commands import manage


def run_json(*args: str, check: bool = True) -> tuple[int, object]:
    result = manage(*args, "--json", check=check)
    return result.returncode, json.loads(result.stdout)  # stdout is one JSON document and nothing else


def test_usage_report_json_matches_the_ledger():
    ws = workspace_on("starter")
    billing.credits_consume(workspace=ws.workspace, amount=4, reference="bulk:report")
    _code, report = run_json("usage_report", "--workspace", ws.workspace.slug)
    assert report["workspace"] == ws.workspace.slug and report["plan"]["code"] == "starter"
    assert report["meters"]["credits"] == {"label": "Answers", "unit": "answers", "used": 4, "limit": 2000, "percent": 0}
    assert report["meters"]["seats"]["used"] == 1 and report["meters"]["seats"]["limit"] == 15
    assert report["credits"]["balance"] == 1996 == billing.credit_balance(workspace=ws.workspace)
    assert report["invoice"]["total"] == "19.00" and report["invoice"]["currency"] == "USD"
    sub = Subscription.objects.get(workspace=ws.workspace)
    assert report["period"] == {"start": sub.period_start.isoformat(), "end": sub.period_end.isoformat(),
                                "month": f"{sub.period_start:%Y-%m}", "current": True}
    assert set(report["rate_limits"]) == {"api_requests", "chat_messages"}


def test_usage_report_for_a_past_month_reads_that_periods_entries():
    ws = workspace_on("starter")
    billing.credits_grant(workspace=ws.workspace, amount=-1990, reason="test: leave 10")
    billing.credits_consume(workspace=ws.workspace, amount=15, reference="bulk:over")  # 5 beyond: overage
    sub = Subscription.objects.get(workspace=ws.workspace)
    first_month = f"{sub.period_start:%Y-%m}"
    billing.subscription_roll(workspace=ws.workspace, now=sub.period_end + timedelta(seconds=1))
    _code, past = run_json("usage_report", "--workspace", ws.workspace.slug, "--month", first_month)
    assert past["period"]["month"] == first_month and past["period"]["current"] is False
    assert past["credits"]["used"] == 15 and past["credits"]["overage"] == 5
    assert past["invoice"]["total"] == "19.20" and past["invoice"]["overage_units"] == 5
    _code, current = run_json("usage_report", "--workspace", ws.workspace.slug)
    assert current["credits"] == {"balance": 2000, "available": 2000, "used": 0, "overage": 0, "entries": 1}


def test_usage_report_human_output_is_a_summary():
    ws = workspace_on("free")
    result = manage("usage_report", "--workspace", ws.workspace.slug)
    assert ws.workspace.slug in result.stdout and "Answers" in result.stdout and "total" in result.stdout


def test_grant_credits_appends_an_adjustment_and_an_audit_row():
    ws = workspace_on("free")
    _code, granted = run_json("grant_credits", "--workspace", ws.workspace.slug, "--amount", "250",
                              "--reason", "launch promotion", "--reference", "promo-1")
    assert granted["amount"] == 250 and granted["kind"] == "adjustment" and granted["balance"] == 350
    entry = LedgerEntry.objects.get(pk=granted["entry_id"])
    assert (entry.reason, entry.actor_label, entry.reference) == ("launch promotion", "operator", "promo-1")
    audit = AuditEntry.objects.get(workspace=ws.workspace, action="credits.adjusted")
    assert audit.actor is None and audit.actor_label == "operator" and audit.data["reason"] == "launch promotion"
    code, again = run_json("grant_credits", "--workspace", ws.workspace.slug, "--amount", "250", "--reason", "again",
                           "--reference", "promo-1", check=False)
    assert code == 1 and again["error"]["code"] == "conflict"
    assert billing.credit_balance(workspace=ws.workspace) == 350


@pytest.mark.parametrize(
    "args, code",
    [
        (["usage_report", "--workspace", "no-such-workspace"], "workspace_not_found"),
        (["grant_credits", "--workspace", "no-such-workspace", "--amount", "5", "--reason", "x"], "workspace_not_found"),
        (["create_workspace", "--slug", "plan-gold-x", "--name", "X", "--owner-email", "g@example.test",
          "--plan", "gold"], "plan_unknown"),
    ],
)
def test_errors_are_json_with_a_code_and_exit_1(args, code):
    status, body = run_json(*args, check=False)
    assert status == 1 and body["error"]["code"] == code and body["error"]["message"]


def test_bad_arguments_of_a_real_workspace():
    ws = workspace_on("free")
    slug = ws.workspace.slug
    for args in (["usage_report", "--workspace", slug, "--month", "2024-13"],
                 ["usage_report", "--workspace", slug, "--month", "1999-01"],
                 ["grant_credits", "--workspace", slug, "--amount", "0", "--reason", "nothing"],
                 ["grant_credits", "--workspace", slug, "--amount", "-101", "--reason", "too much"],
                 ["grant_credits", "--workspace", slug, "--amount", "5", "--reason", "  "]):
        status, body = run_json(*args, check=False)
        assert status == 1 and body["error"]["code"] == "invalid", (args, body)
    assert billing.credit_balance(workspace=ws.workspace) == 100
