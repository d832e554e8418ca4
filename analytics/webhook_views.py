"""Settings → Webhooks (dashboard): endpoints, "send test event", secret rotation, deliveries and redelivery.

Owners and admins (`settings.manage`), like the other settings pages. The same services as /api/v1/webhooks/."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.permissions import workspace_permission_required
from analytics import webhooks
from config.errors import ApplicationError


def _checked(request: HttpRequest) -> list[str]:
    return [event for event in request.POST.getlist("events") if event in webhooks.EVENT_TYPES]


@workspace_permission_required("settings.manage")
@require_http_methods(["GET", "POST"])
def webhooks_index(request: HttpRequest) -> HttpResponse:
    new_secret = error = None
    status = 200
    form = {"url": "", "description": "", "events": []}
    if request.method == "POST":
        action = request.POST.get("action", "create")
        try:
            if action == "create":
                form = {"url": request.POST.get("url", ""), "description": request.POST.get("description", ""),
                        "events": _checked(request)}
                endpoint, new_secret = webhooks.webhook_endpoint_create(
                    url=form["url"], events=form["events"], description=form["description"], actor=request.user)
                form = {"url": "", "description": "", "events": []}
            else:
                endpoint_id = request.POST.get("endpoint", "")
                endpoint = webhooks.webhook_endpoint_get(endpoint_id=int(endpoint_id) if endpoint_id.isdigit() else 0)
                if action == "test":
                    webhooks.webhook_test_send(endpoint=endpoint)
                    messages.success(request, "Test event queued; see its delivery below the endpoint.")
                elif action == "rotate":
                    endpoint, new_secret = webhooks.webhook_secret_rotate(endpoint=endpoint, actor=request.user)
                elif action in ("enable", "disable"):
                    webhooks.webhook_endpoint_update(endpoint=endpoint, actor=request.user,
                                                     is_active=action == "enable")
                elif action == "delete":
                    webhooks.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)
                    messages.success(request, "Endpoint deleted.")
                if new_secret is None:
                    return redirect("webhooks")
        except ApplicationError as exc:
            error, status = exc.message, exc.status_code
            fields = exc.details.get("fields") if isinstance(exc.details, dict) else None
            if fields:
                error += " " + " ".join(str(m) for messages_ in fields.values() for m in messages_)
    endpoints = list(webhooks.webhook_endpoint_list())
    for endpoint in endpoints:
        endpoint.recent = list(webhooks.webhook_delivery_list(endpoint=endpoint)[:10])
    return render(request, "analytics/webhooks.html", {
        "endpoints": endpoints, "event_types": webhooks.EVENT_TYPES, "new_secret": new_secret, "error": error,
        "form": form,
    }, status=status)


@workspace_permission_required("settings.manage")
@require_http_methods(["POST"])
def webhook_redeliver(request: HttpRequest, webhook_id: int, delivery_id: int) -> HttpResponse:
    endpoint = webhooks.webhook_endpoint_get(endpoint_id=webhook_id)
    try:
        webhooks.webhook_redeliver(delivery=webhooks.webhook_delivery_get(endpoint=endpoint, delivery_id=delivery_id))
        messages.success(request, "Redelivery queued.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("webhooks")
