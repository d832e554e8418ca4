from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet

from tenants.models import Domain, Workspace


def workspace_for_host(*, host: str) -> Workspace | None:
    domain = Domain.objects.select_related("tenant").filter(domain=host.lower()).first()
    return domain.tenant if domain else None


def workspace_host(*, workspace: Workspace) -> str:
    primary = Domain.objects.filter(tenant=workspace, is_primary=True).values_list("domain", flat=True).first()
    return primary or f"{workspace.slug}.{settings.BASE_DOMAIN}"


def host_url(host: str) -> str:
    port = settings.PUBLIC_PORT
    default_port = {"http": 80, "https": 443}.get(settings.PUBLIC_SCHEME)
    suffix = "" if port in (None, default_port) else f":{port}"
    return f"{settings.PUBLIC_SCHEME}://{host}{suffix}"


def workspace_url(*, workspace: Workspace, path: str = "/") -> str:
    return host_url(workspace_host(workspace=workspace)) + path


def public_url(path: str = "/") -> str:
    return host_url(settings.BASE_DOMAIN) + path


def workspace_list() -> QuerySet[Workspace]:
    return Workspace.objects.exclude(schema_name="public").order_by("slug")


def workspace_get(*, slug: str) -> Workspace | None:
    return workspace_list().filter(slug=slug).first()
