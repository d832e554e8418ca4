"""Public site (landing, signup) and the workspace dashboard's settings pages (the home is analytics.views.home)."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.forms import SignupForm
from accounts.permissions import workspace_permission_required
from accounts.services import login_handoff_token, workspace_signup
from config.client_ip import client_ip
from config.errors import ApplicationError
from config.throttle import throttle_check, throttle_hit
from tenants import billing, services
from tenants.selectors import workspace_url


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "public/landing.html")


# Service errors that belong to one field of the signup form (the service speaks of "name", the form of
# "workspace_name"; an existing email is about the email field, not the whole form).
_SIGNUP_ERROR_FIELDS = {"email_taken": "email", "name": "workspace_name"}


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "GET":
        return render(request, "public/signup.html", {"form": form})
    state = throttle_check("signup-ip", client_ip(request), settings.SIGNUP_THROTTLE)
    if not state.allowed:
        form.add_error(None, "Too many sign-ups from your network; try again later.")
        return render(request, "public/signup.html", {"form": form}, status=429)
    if not form.is_valid():
        return render(request, "public/signup.html", {"form": form}, status=400)
    throttle_hit("signup-ip", client_ip(request), settings.SIGNUP_THROTTLE)
    data = form.cleaned_data
    try:
        user, result = workspace_signup(
            email=data["email"], password=data["password"], workspace_name=data["workspace_name"],
            slug=(data["slug"] or "").strip() or None, full_name=data["full_name"],
        )
    except ApplicationError as error:
        field = error.details.get("field")
        field = "slug" if error.code.startswith("slug_") else _SIGNUP_ERROR_FIELDS.get(error.code, field)
        field = _SIGNUP_ERROR_FIELDS.get(field, field)
        if field not in form.fields:
            field = None
        form.add_error(field, error.message)
        return render(request, "public/signup.html", {"form": form, "error_code": error.code}, status=error.status_code)
    token = login_handoff_token(user=user, workspace=result.workspace)
    return HttpResponseRedirect(workspace_url(workspace=result.workspace, path=f"/auth/handoff/?token={token}"))


@workspace_permission_required("settings.view")
def workspace_settings(request: HttpRequest) -> HttpResponse:
    from tenants.models import WorkspaceExport

    return render(request, "dashboard/settings.html", {
        "plan": billing.plan_for_workspace(workspace=request.tenant),
        "retention_form": RetentionForm(initial={"days": request.tenant.conversation_retention_days}),
        "exports": WorkspaceExport.objects.filter(workspace=request.tenant)[:5],
    })


class RetentionForm(forms.Form):
    days = forms.IntegerField(min_value=0, max_value=services.RETENTION_MAX_DAYS, label="Keep conversations for (days)",
                              help_text="0 keeps them forever. Older conversations are deleted every hour.")


@workspace_permission_required("settings.manage")
@require_POST
def workspace_retention(request: HttpRequest) -> HttpResponse:
    form = RetentionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Retention is a whole number of days from 0 to "
                                f"{services.RETENTION_MAX_DAYS}.")
        return redirect("settings")
    services.workspace_retention_set(workspace=request.tenant, days=form.cleaned_data["days"])
    messages.success(request, "Retention saved.")
    return redirect("settings")


# --- usage and billing (tenants.billing; docs/billing.md) -------------------------------------------------------


class PlanChangeForm(forms.Form):
    plan = forms.SlugField(max_length=40)


class OverageForm(forms.Form):
    enabled = forms.TypedChoiceField(choices=[("1", "on"), ("0", "off")], coerce=lambda v: v == "1")


@workspace_permission_required("billing.view")
@require_GET
def billing_overview(request: HttpRequest) -> HttpResponse:
    workspace = request.tenant
    summary = billing.usage_summary(workspace=workspace)
    gateway = billing.billing_gateway()
    return render(request, "tenants/billing.html", {
        "summary": summary,
        "meters": billing.meter_usages(summary),
        "invoice": billing.invoice_preview(workspace=workspace),
        "plans": billing.plan_list(),
        "current_plan": billing.plan_for_workspace(workspace=workspace),
        "ledger": billing.ledger_history(workspace=workspace)[:50],
        "gateway_name": gateway.name,
        "payment_url": gateway.payment_method_url(workspace=workspace),
    })


@workspace_permission_required("billing.manage")
@require_POST
def billing_plan_change(request: HttpRequest) -> HttpResponse:
    form = PlanChangeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a plan.")
        return redirect("billing")
    try:
        change = billing.plan_change(workspace=request.tenant, code=form.cleaned_data["plan"], actor=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("billing")
    if change.kind == "upgraded":
        messages.success(request, f"You are on the {change.to_plan} plan now; {change.credits_granted} answers were "
                                  "added for the rest of this period.")
    elif change.kind == "downgrade_scheduled":
        messages.success(request, f"You move to the {change.to_plan} plan on {change.effective_at:%Y-%m-%d}, when "
                                  "this billing period ends.")
    elif change.kind == "downgrade_cancelled":
        messages.success(request, f"The scheduled change was cancelled; you stay on the {change.to_plan} plan.")
    else:
        messages.info(request, f"You are on the {change.to_plan} plan already.")
    return redirect("billing")


@workspace_permission_required("billing.manage")
@require_POST
def billing_overage(request: HttpRequest) -> HttpResponse:
    form = OverageForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose whether answers beyond your credits are allowed.")
        return redirect("billing")
    billing.overage_set(workspace=request.tenant, enabled=form.cleaned_data["enabled"], actor=request.user)
    messages.success(request, "Answers beyond your credits are " + (
        "allowed and billed as overage." if form.cleaned_data["enabled"] else "refused from now on."))
    return redirect("billing")
