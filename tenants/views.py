"""Public site (landing, signup) and the workspace dashboard's home and settings pages."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from accounts.forms import SignupForm
from accounts.permissions import workspace_permission_required
from accounts.services import login_handoff_token, workspace_signup
from accounts.views import client_ip
from config.errors import ApplicationError
from config.throttle import throttle_check, throttle_hit
from tenants.selectors import workspace_url


def landing(request: HttpRequest) -> HttpResponse:
    return render(request, "public/landing.html")


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
        field = error.details.get("field") if error.details.get("field") in form.fields else None
        if error.code.startswith("slug_"):
            field = "slug"
        form.add_error(field, error.message)
        return render(request, "public/signup.html", {"form": form, "error_code": error.code}, status=error.status_code)
    token = login_handoff_token(user=user, workspace=result.workspace)
    return HttpResponseRedirect(workspace_url(workspace=result.workspace, path=f"/auth/handoff/?token={token}"))


@workspace_permission_required("workspace.view")
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/home.html")


@workspace_permission_required("settings.view")
def workspace_settings(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/settings.html")
