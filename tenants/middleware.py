from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_tenants.middleware.main import TenantMainMiddleware

from config.errors import ErrorCode, NotFound, PermissionDenied, error_json_response
from config.middleware import wants_json
from tenants.models import WorkspaceStatus
from tenants.selectors import public_url


class WorkspaceMiddleware(TenantMainMiddleware):
    """django-tenants' host → schema resolution, with a clear page (or JSON error) for unknown hosts."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        response = super().process_request(request)
        if response is not None:
            return response
        workspace = request.tenant
        if workspace.schema_name != "public" and workspace.status != WorkspaceStatus.ACTIVE:
            error = PermissionDenied("This workspace is suspended.", code=ErrorCode.WORKSPACE_INACTIVE)
            if wants_json(request):
                return error_json_response(error)
            return render(request, "errors/error.html", {"error": error}, status=403)
        import structlog

        structlog.contextvars.bind_contextvars(workspace=workspace.slug)
        return None

    def no_tenant_found(self, request: HttpRequest, hostname: str) -> HttpResponse:
        error = NotFound("There is no workspace at this address.", code=ErrorCode.WORKSPACE_NOT_FOUND)
        if wants_json(request):
            return error_json_response(error)
        return render(request, "errors/no_workspace.html", {"hostname": hostname, "public_url": public_url()}, status=404)
