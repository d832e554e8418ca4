"""DRF authentication: workspace API keys and dashboard sessions."""
from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.request import Request

from accounts.models import ApiKey
from accounts.services import api_key_authenticate
from config.errors import ApplicationError


class ApiKeyPrincipal:
    """The 'user' of a request made with an API key: it acts with the key's scopes, never a role."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.api_key = key

    def __str__(self) -> str:
        return f"api-key:{self.api_key.name}"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        workspace = getattr(request._request, "tenant", None)
        if workspace is None or workspace.schema_name == "public":
            raise exceptions.AuthenticationFailed("API keys work on a workspace's host.", code="invalid_api_key")
        try:
            key = api_key_authenticate(workspace=workspace, raw=raw)
        except ApplicationError as error:
            raise exceptions.AuthenticationFailed(error.message, code=error.code) from None
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class WorkspaceSessionAuthentication(SessionAuthentication):
    """Dashboard sessions, with CSRF enforced on unsafe methods (DRF's SessionAuthentication)."""

    def authenticate(self, request: Request) -> Any:
        return super().authenticate(request)


try:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
        target_class = "accounts.authentication.ApiKeyAuthentication"
        name = "ApiKeyAuth"

        def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
            return {"type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "`Api-Key <key>`: a workspace API key."}

    class WorkspaceSessionScheme(OpenApiAuthenticationExtension):
        target_class = "accounts.authentication.WorkspaceSessionAuthentication"
        name = "SessionAuth"

        def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
            return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
except ImportError:  # pragma: no cover
    pass
