"""Login (public and workspace hosts), the cross-host handoff, invitations, team and API-key pages."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.views import PasswordResetView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors, services, throttles
from accounts.forms import AcceptInvitationForm, ApiKeyForm, InviteForm, LoginForm, RoleChangeForm
from accounts.models import User
from accounts.permissions import workspace_permission_required
from accounts.roles import role_has_permission
from config.client_ip import client_ip
from config.errors import ApplicationError
from tenants import billing
from tenants.selectors import workspace_get, workspace_url


def _check_credentials(request: HttpRequest, form: LoginForm):
    email = form.cleaned_data["email"].lower()
    wait = throttles.login_throttle_wait(email=email, ip=client_ip(request))
    if wait:
        form.add_error(None, _login_wait_message(wait))
        return None, 429
    user = authenticate(request, username=email, password=form.cleaned_data["password"])
    if user is None:
        throttles.login_failure_record(email=email, ip=client_ip(request))
        form.add_error(None, "Email or password is wrong.")
        return None, 400
    throttles.login_success_record(email=email)
    return user, 200


def _login_wait_message(wait: int) -> str:
    return f"Too many failed attempts. Try again in {max(wait // 60, 1)} minute(s)."


def admin_login(request: HttpRequest) -> HttpResponse:
    """The platform admin's login (Django admin on the public host) behind the product login's throttle: its form
    (ThrottledAdminLoginForm) counts and refuses; a refusal is a 429 with Retry-After, like the product login's."""
    from django.contrib import admin

    response = admin.site.login(request)
    wait = getattr(request, "login_retry_after", 0)
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


class ThrottledPasswordResetView(PasswordResetView):
    """Django's reset request, counted per client address and per e-mail; over budget: the form again, 429."""

    def form_valid(self, form):
        wait = throttles.password_reset_throttle_take(email=form.cleaned_data["email"], ip=client_ip(self.request))
        if wait:
            form.add_error(None, f"Too many reset requests. Try again in {max(wait // 60, 1)} minute(s).")
            response = self.form_invalid(form)
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        return super().form_valid(form)


def _redirect_to_workspace(user, workspace) -> HttpResponseRedirect:
    token = services.login_handoff_token(user=user, workspace=workspace)
    return HttpResponseRedirect(workspace_url(workspace=workspace, path=f"/auth/handoff/?token={token}"))


@require_http_methods(["GET", "POST"])
def public_login(request: HttpRequest) -> HttpResponse:
    """The public site's login: send the user to their workspace (or let them pick one)."""
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        user, status = _check_credentials(request, form)
        if user is not None:
            workspaces = list(selectors.user_workspaces(user=user))
            if len(workspaces) == 1:
                return _redirect_to_workspace(user, workspaces[0])
            login(request, user)
            return redirect("workspace-choose")
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/login.html", {"form": form, "public": True}, status=status)


def workspace_choose(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    workspaces = list(selectors.user_workspaces(user=request.user))
    return render(request, "accounts/choose_workspace.html", {"workspaces": workspaces})


@require_POST
def workspace_go(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = workspace_get(slug=slug)
    if not request.user.is_authenticated or workspace is None:
        return redirect("login")
    if not selectors.membership_role(user_id=request.user.pk, workspace_id=workspace.pk):
        return render(request, "errors/not_member.html", status=403)
    return _redirect_to_workspace(request.user, workspace)


@require_http_methods(["GET", "POST"])
def workspace_login(request: HttpRequest) -> HttpResponse:
    """A workspace host's own login: members of this workspace only."""
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        user, status = _check_credentials(request, form)
        if user is not None:
            if not selectors.membership_role(user_id=user.pk, workspace_id=request.tenant.pk):
                form.add_error(None, "Email or password is wrong.")  # same words: don't reveal who is a member
                status = 400
            else:
                login(request, user)
                target = request.GET.get("next", "/")
                if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
                    target = "/"
                return redirect(target)
    elif request.method == "POST":
        status = 400
    return render(request, "accounts/login.html", {"form": form, "public": False}, status=status)


def login_handoff(request: HttpRequest) -> HttpResponse:
    try:
        user = services.login_handoff_redeem(token=request.GET.get("token", ""), workspace=request.tenant)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("login")
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("dashboard")


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")


@workspace_permission_required("workspace.view")
@require_POST
def workspace_switch(request: HttpRequest, slug: str) -> HttpResponse:
    workspace = workspace_get(slug=slug)
    if workspace is None or not selectors.membership_role(user_id=request.user.pk, workspace_id=workspace.pk):
        return render(request, "errors/not_member.html", status=403)
    return _redirect_to_workspace(request.user, workspace)


@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    workspace = request.tenant
    try:
        invitation = services.invitation_for_token(workspace=workspace, token=token)
    except ApplicationError as error:
        return render(request, "errors/error.html", {"error": error}, status=404)
    form = AcceptInvitationForm(request.POST or None)
    if request.method == "POST":
        try:
            if request.user.is_authenticated:
                services.invitation_accept(workspace=workspace, token=token, user=request.user)
            elif form.is_valid():
                services.invitation_accept(
                    workspace=workspace, token=token, password=form.cleaned_data["password"],
                    full_name=form.cleaned_data["full_name"],
                )
                user = authenticate(request, username=invitation.email, password=form.cleaned_data["password"])
                login(request, user)
            else:
                return render(request, "accounts/accept_invitation.html", {"form": form, "invitation": invitation}, status=400)
        except ApplicationError as error:
            field = error.details.get("field")
            form.add_error(field if field in form.fields else None, error.message)
            has_account = User.objects.filter(email=invitation.email).exists()
            return render(
                request, "accounts/accept_invitation.html",
                {"form": form, "invitation": invitation, "has_account": has_account}, status=error.status_code,
            )
        messages.success(request, f"Welcome to {workspace.name}.")
        return redirect("dashboard")
    has_account = User.objects.filter(email=invitation.email).exists()
    return render(
        request, "accounts/accept_invitation.html", {"form": form, "invitation": invitation, "has_account": has_account}
    )


@workspace_permission_required("team.view")
@require_http_methods(["GET", "POST"])
def team(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not role_has_permission(request.role, "team.manage"):
            return render(request, "errors/forbidden.html", status=403)
        if form.is_valid():
            try:
                services.invitation_create(
                    workspace=request.tenant, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                    invited_by=request.user, actor_role=request.role,
                )
                messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
                return redirect("team")
            except ApplicationError as error:
                form.add_error(None, error.message)
        status = 400
    context = {
        "form": form,
        "members": selectors.membership_list(workspace=request.tenant),
        "invitations": selectors.invitation_list(workspace=request.tenant),
        "role_form": RoleChangeForm(),
        "seats_used": services.seats_used(workspace=request.tenant),
        "seats_limit": billing.plan_for_workspace(workspace=request.tenant).max_seats,
    }
    return render(request, "accounts/team.html", context, status=status)


@workspace_permission_required("team.manage")
@require_POST
def member_update(request: HttpRequest, membership_id: int) -> HttpResponse:
    membership = selectors.membership_get(workspace=request.tenant, membership_id=membership_id)
    if membership is None:
        return render(request, "errors/404.html", status=404)
    try:
        if request.POST.get("action") == "remove":
            services.membership_remove(membership=membership, actor=request.user, actor_role=request.role)
            messages.success(request, f"{membership.user.email} was removed.")
        else:
            form = RoleChangeForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Choose a valid role.")
                return redirect("team")
            services.membership_role_change(
                membership=membership, role=form.cleaned_data["role"], actor=request.user, actor_role=request.role
            )
            messages.success(request, f"{membership.user.email} is now {form.cleaned_data['role']}.")
    except ApplicationError as error:
        messages.error(request, error.message)
    return redirect("team")


@workspace_permission_required("api_keys.manage")
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    new_key = None
    status = 200
    if request.method == "POST":
        if request.POST.get("revoke"):
            key = selectors.api_key_get(workspace=request.tenant, key_id=int(request.POST["revoke"]) if request.POST["revoke"].isdigit() else 0)
            if key is not None:
                services.api_key_revoke(key=key, actor=request.user)
                messages.success(request, f"Key “{key.name}” revoked.")
            return redirect("api-keys")
        if form.is_valid():
            try:
                _key, new_key = services.api_key_create(
                    workspace=request.tenant, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                    created_by=request.user,
                )
                form = ApiKeyForm()
            except ApplicationError as error:
                form.add_error(None, error.message)
                status = 400
        else:
            status = 400
    return render(
        request, "accounts/api_keys.html",
        {"form": form, "keys": selectors.api_key_list(workspace=request.tenant), "new_key": new_key}, status=status,
    )


@workspace_permission_required("audit.view")
def audit_log(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/audit.html", {"entries": selectors.audit_list(workspace=request.tenant)[:200]})


def audit_csv_response(workspace) -> StreamingHttpResponse:
    """The whole audit log as a CSV download (the dashboard and the API serve the same file)."""
    response = StreamingHttpResponse(selectors.audit_csv_lines(workspace=workspace), content_type="text/csv; charset=utf-8")
    filename = f"audit-log-{workspace.slug}-{timezone.now():%Y%m%d-%H%M%S}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


@workspace_permission_required("audit.view")
@require_GET
def audit_log_export(request: HttpRequest) -> HttpResponse:
    return audit_csv_response(request.tenant)


@workspace_permission_required("ownership.transfer")
@require_POST
def ownership_transfer(request: HttpRequest) -> HttpResponse:
    raw = request.POST.get("membership_id", "")
    membership = selectors.membership_get(workspace=request.tenant, membership_id=int(raw)) if raw.isdigit() else None
    if membership is None:
        messages.error(request, "Choose the member who becomes the owner.")
        return redirect("team")
    try:
        services.workspace_ownership_transfer(workspace=request.tenant, to_membership=membership, actor=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("team")
    messages.success(request, f"{membership.user.email} owns this workspace now; you are an admin.")
    return redirect("team")


@workspace_permission_required("team.manage")
@require_POST
def invitation_revoke(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = selectors.invitation_get(workspace=request.tenant, invitation_id=invitation_id)
    if invitation is None or not invitation.is_pending:
        return render(request, "errors/404.html", status=404)
    services.invitation_revoke(invitation=invitation, actor=request.user)
    messages.success(request, f"The invitation to {invitation.email} was revoked.")
    return redirect("team")


# --- workspace export (owner only; accounts.portability) -------------------------------------------------------------
@workspace_permission_required("workspace.export")
@require_POST
def workspace_export_request(request: HttpRequest) -> HttpResponse:
    from accounts.portability import workspace_export_request as export_request

    try:
        export_request(workspace=request.tenant, user=request.user)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "The export is being prepared; it appears below when it is ready to download.")
    return redirect("settings")


@workspace_permission_required("workspace.export")
@require_GET
def workspace_export_download(request: HttpRequest, export_id: int) -> HttpResponse:
    from pathlib import Path

    from django.http import FileResponse, Http404

    from tenants.models import ExportStatus, WorkspaceExport

    export = WorkspaceExport.objects.filter(pk=export_id, workspace=request.tenant, status=ExportStatus.READY).first()
    path = Path(settings.MEDIA_ROOT) / export.path if export is not None and export.path else None
    if path is None or not path.is_file():
        raise Http404("No such export.")
    services.audit_record(workspace=request.tenant, actor=request.user, action="workspace.export_downloaded",
                          target=str(export.pk))
    return FileResponse(path.open("rb"), as_attachment=True,
                        filename=f"{request.tenant.slug}-export-{export.pk}.tar.gz", content_type="application/gzip")
