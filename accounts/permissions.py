"""Who may do what, for DRF views and dashboard views, from the one role matrix (accounts.roles).

Every view names the permission it needs (`required_permission`, or a per-method dict). A view that names none is
refused: scoping fails closed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.authentication import ApiKeyPrincipal
from accounts.roles import role_has_permission, scopes_have_permission
from config.errors import ErrorCode, NotAuthenticated, NotFound, PermissionDenied

logger = logging.getLogger(__name__)


def view_permission(view: Any, method: str) -> str | None:
    required = getattr(view, "required_permission", None)
    if isinstance(required, dict):
        return required.get(method.upper()) or required.get("*")
    return required


class HasWorkspacePermission(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        workspace = getattr(request._request, "tenant", None)
        if workspace is None or workspace.schema_name == "public":
            raise NotFound("Not found.")
        permission = view_permission(view, request.method)
        if permission is None:
            logger.error("view %s names no permission; refusing", type(view).__name__)
            raise PermissionDenied("This endpoint is not available.")
        user = request.user
        if not getattr(user, "is_authenticated", False):
            raise NotAuthenticated("Authenticate with an API key or a dashboard session.")
        if isinstance(user, ApiKeyPrincipal):
            allowed = scopes_have_permission(user.api_key.scopes, permission)
        else:
            role = getattr(request._request, "role", None)
            if role is None:
                raise PermissionDenied("You are not a member of this workspace.", code=ErrorCode.NOT_A_MEMBER)
            allowed = role_has_permission(role, permission)
        if not allowed:
            raise PermissionDenied("Your role does not allow this.", details={"permission": permission})
        return True


def workspace_permission_required(permission: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Dashboard views: log in first; then members only; then the role must hold `permission`."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if getattr(request, "role", None) is None:
                return render(request, "errors/not_member.html", status=403)
            if not role_has_permission(request.role, permission):
                return render(request, "errors/forbidden.html", {"permission": permission}, status=403)
            return view(request, *args, **kwargs)

        wrapped.required_permission = permission  # type: ignore[attr-defined]
        return wrapped

    return decorator
