"""Hidden plans (Plan.is_public=False, made by staff for one customer) are not for everyone: a workspace owner chooses
among the public plans and their current one, over the API and the billing page, and the `plan_unknown` error names
the public plans only (docs/billing.md)."""
from __future__ import annotations

import secrets
from decimal import Decimal

from accounts.services import workspace_signup
from tenants import billing
from tenants.models import Plan, Subscription, Workspace
from tests.factories import PASSWORD, WorkspaceWithOwner, unique_slug


def hidden_plan(tier: int = 5) -> Plan:
    return Plan.objects.create(
        code=f"hidden-{secrets.token_hex(4)}", name="Custom deal", tier=tier, is_public=False, price=Decimal("1.00"),
        overage_price=Decimal("0.0100"), allow_overage=True, monthly_credits=100000, max_documents=None,
        max_storage_bytes=None, max_widgets=None, max_seats=None, api_requests_per_minute=None,
        chat_messages_per_minute=None, allowed_providers=["builtin"])


def workspace_on(plan: str) -> WorkspaceWithOwner:
    owner, result = workspace_signup(email=f"owner-{secrets.token_hex(4)}@example.test", password=PASSWORD,
                                     workspace_name="Plans Co", slug=unique_slug("plans"), plan=plan)
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def test_an_owner_cannot_switch_to_a_hidden_plan_and_the_error_lists_public_plans_only(host_client):
    secret = hidden_plan()
    ws = workspace_on("free")
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    public = list(Plan.objects.filter(is_public=True).order_by("tier", "code").values_list("code", flat=True))

    response = owner.patch("/api/v1/subscription/", {"plan": secret.code}, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "plan_unknown" and error["details"]["allowed"] == public
    unknown = owner.patch("/api/v1/subscription/", {"plan": "gold"}, content_type="application/json").json()["error"]
    assert unknown["details"]["allowed"] == public
    hidden_codes = set(Plan.objects.filter(is_public=False).values_list("code", flat=True))
    assert not hidden_codes & set(unknown["details"]["allowed"])

    assert owner.post("/settings/billing/plan/", {"plan": secret.code}).status_code == 302  # the page: a message
    assert Workspace.objects.get(pk=ws.workspace.pk).plan == "free"
    assert Subscription.objects.get(workspace=ws.workspace).scheduled_plan_id is None


def test_a_workspace_on_a_hidden_plan_may_keep_it_and_staff_may_move_others_onto_it(host_client):
    secret = hidden_plan()
    ws, other = workspace_on(secret.code), workspace_on("free")
    owner = host_client(ws.host)
    owner.force_login(ws.owner)
    down = owner.patch("/api/v1/subscription/", {"plan": "pro"}, content_type="application/json")
    assert down.status_code == 200 and down.json()["change"]["kind"] == "downgrade_scheduled"
    back = owner.patch("/api/v1/subscription/", {"plan": secret.code}, content_type="application/json")
    assert back.status_code == 200 and back.json()["change"]["kind"] == "downgrade_cancelled"

    change = billing.plan_change(workspace=other.workspace, code=secret.code, include_hidden=True)
    assert change.kind == "upgraded" and Workspace.objects.get(pk=other.workspace.pk).plan == secret.code
