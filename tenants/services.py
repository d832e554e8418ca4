"""Workspace lifecycle: validate a slug, provision a workspace, purge one."""
from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import unicodedata
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils.text import slugify

from config.errors import Conflict, ErrorCode, NotFound, ValidationFailed
from tenants import billing, provisioning
from tenants.models import Domain, Workspace, WorkspaceStatus
from tenants.signals import workspace_purging, workspace_status_changed

logger = logging.getLogger(__name__)

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
SLUG_MIN, SLUG_MAX = 3, 40
RESERVED_SLUGS = frozenset(
    """www api admin public static media app apps mail email smtp help support status docs doc dashboard login logout
    signup register account accounts auth oauth billing blog cdn assets widget widgets ws wss socket template pool
    root system internal localhost test demo-template null undefined information-schema pg postgres default""".split()
)


def schema_name_for_slug(slug: str) -> str:
    return "ws_" + slug.replace("-", "_")


def workspace_slug_validate(slug: str) -> str:
    """Return the slug if it can name a workspace; raise ValidationFailed with a stable code otherwise."""
    if not isinstance(slug, str) or unicodedata.normalize("NFKC", slug) != slug or not slug.isascii():
        raise ValidationFailed("Use lowercase letters, digits and dashes only.", code=ErrorCode.SLUG_INVALID)
    if not (SLUG_MIN <= len(slug) <= SLUG_MAX) or not SLUG_RE.match(slug):
        raise ValidationFailed(
            f"A workspace address has {SLUG_MIN}-{SLUG_MAX} lowercase letters, digits and single dashes, "
            "and starts with a letter.",
            code=ErrorCode.SLUG_INVALID,
            details={"slug": slug[:80]},
        )
    if slug in RESERVED_SLUGS or slug.startswith("pg-"):
        raise ValidationFailed("That address is reserved.", code=ErrorCode.SLUG_RESERVED, details={"slug": slug})
    return slug


def workspace_slug_suggest(name: str) -> str:
    """A free, valid slug derived from a workspace name ("Acme Inc." -> "acme-inc", then "acme-inc-2", ...)."""
    base = slugify(unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode())[:SLUG_MAX - 4].strip("-")
    base = re.sub(r"-+", "-", base)
    if not base or not base[0].isalpha():
        base = f"ws-{base}".strip("-")
    if len(base) < SLUG_MIN:
        base = (base + "-team")[:SLUG_MAX]
    candidate, n = base, 1
    while True:
        try:
            workspace_slug_validate(candidate)
        except ValidationFailed:
            candidate = f"{base}-hq" if n == 1 else f"{base}-{n}"
            n += 1
            continue
        if not Workspace.objects.filter(slug=candidate).exists():
            return candidate
        n += 1
        candidate = f"{base}-{n}"


@dataclass
class ProvisionResult:
    workspace: Workspace
    method: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def workspace_create(*, slug: str, name: str, plan: str = "free", domain: str | None = None) -> ProvisionResult:
    """Create a live workspace: its schema (from the warm pool or the template), its row and its domain.

    Everything happens in one transaction: a failed signup leaves no schema, row or domain behind.
    """
    slug = workspace_slug_validate(slug)
    name = (name or "").strip()
    if not name or len(name) > 120:
        raise ValidationFailed("A workspace needs a name of at most 120 characters.", details={"field": "name"})
    host = (domain or f"{slug}.{settings.BASE_DOMAIN}").lower()
    plan = billing.plan_get(code=plan).code  # unknown plans are refused (plan_unknown) before any work
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with transaction.atomic():
        if Workspace.objects.filter(slug=slug).exists() or Domain.objects.filter(domain=host).exists():
            raise Conflict("That workspace address is taken.", code=ErrorCode.SLUG_TAKEN, details={"slug": slug})
        schema_name = schema_name_for_slug(slug)
        method = provisioning.schema_provision(schema_name)
        timings["schema"] = (time.perf_counter() - started) * 1000
        workspace = Workspace(schema_name=schema_name, slug=slug, name=name, plan=plan)
        workspace.save()
        Domain.objects.create(domain=host, tenant=workspace, is_primary=True)
        billing.subscription_start(workspace=workspace)  # anchors the billing periods and grants the first credits
        transaction.on_commit(pool_refill_soon)
    timings["total"] = (time.perf_counter() - started) * 1000
    logger.info("workspace created", extra={"workspace": slug, "method": method, "ms": round(timings["total"], 1)})
    return ProvisionResult(workspace=workspace, method=method, timings_ms=timings)


def pool_refill_soon() -> None:
    """Top the warm pool up after a signup took from it, off the request path."""
    mode = settings.WORKSPACE_POOL_REFILL
    if mode == "celery":
        from tenants.tasks import workspace_pool_refill

        try:
            workspace_pool_refill.delay()
            return
        except Exception:  # broker down: the next signup builds from the template, and we refill here instead
            logger.warning("pool refill could not be queued; refilling in a thread")
    if mode in ("celery", "inline"):
        threading.Thread(target=_refill_in_thread, daemon=True).start()


def _refill_in_thread() -> None:
    try:
        provisioning.pool_refill()
    except Exception:
        logger.exception("pool refill failed")
    finally:
        connection.close()


@dataclass
class PurgeReport:
    slug: str
    schema: str
    removed: list[str]


def workspace_delete(*, slug: str) -> PurgeReport:
    """Purge a workspace: what higher apps keep outside the schema (signal), its cache keys, files, schema, rows."""
    workspace = Workspace.objects.exclude(schema_name="public").filter(slug=slug).first()
    if workspace is None:
        raise NotFound(f"No workspace {slug!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND, details={"slug": slug})
    removed: list[str] = []
    for _receiver, result in workspace_purging.send(sender=Workspace, workspace=workspace):
        if result:
            removed.append(str(result))
    removed.append(f"cache keys: {workspace_cache_purge(workspace.schema_name)}")
    media = settings.MEDIA_ROOT / "workspaces" / workspace.schema_name
    if media.exists():
        shutil.rmtree(media)
        removed.append(f"files: {media}")
    schema = workspace.schema_name
    with transaction.atomic():
        provisioning.schema_drop(schema)
        workspace.delete()  # cascades to domains, memberships, invitations, keys, audit rows
    removed.append(f"schema: {schema}")
    logger.info("workspace deleted", extra={"workspace": slug})
    return PurgeReport(slug=slug, schema=schema, removed=removed)


def workspace_cache_purge(schema_name: str) -> int:
    """Delete every cache key written in this workspace's schema (keys carry it: config.cache)."""
    client = cache._cache.get_client(write=True)  # the django-redis-less RedisCache exposes its client this way
    pattern = f"*:{schema_name}:*"
    deleted = 0
    for key in client.scan_iter(match=pattern, count=500):
        deleted += client.delete(key)
    return deleted


def public_site_ensure() -> list[str]:
    """The public site is django-tenants' public tenant, served on BASE_DOMAIN (and 127.0.0.1 locally)."""
    public, _ = Workspace.objects.get_or_create(
        schema_name="public", defaults={"slug": "public", "name": "CustomerCareGPT"}
    )
    hosts = [settings.BASE_DOMAIN] + (["127.0.0.1"] if settings.BASE_DOMAIN == "localhost" else [])
    for index, host in enumerate(hosts):
        Domain.objects.get_or_create(domain=host, defaults={"tenant": public, "is_primary": index == 0})
    return hosts


RETENTION_MAX_DAYS = 3650


def workspace_retention_set(*, workspace: Workspace, days: int) -> Workspace:
    """Conversations idle for more than `days` days are purged by beat (chat.retention); 0 keeps them forever."""
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= RETENTION_MAX_DAYS:
        raise ValidationFailed(f"Retention is a number of days from 0 (keep forever) to {RETENTION_MAX_DAYS}.",
                               details={"field": "conversation_retention_days"})
    Workspace.objects.filter(pk=workspace.pk).update(conversation_retention_days=days)
    workspace.conversation_retention_days = days
    return workspace


def workspace_status_set(*, workspace: Workspace, status: str) -> Workspace:
    """Suspend or reactivate a workspace. HTTP refuses a suspended workspace from the next request on; its open
    sockets are told once this commits (workspace_status_announce) and close."""
    if status not in WorkspaceStatus.values:
        raise ValidationFailed("Unknown workspace status.", details={"field": "status", "allowed": WorkspaceStatus.values})
    with transaction.atomic():
        changed = Workspace.objects.filter(pk=workspace.pk).exclude(status=status).update(status=status)
        workspace.status = status
        if changed:
            workspace_status_announce(workspace=workspace)
    return workspace


def workspace_status_announce(*, workspace: Workspace) -> None:
    """After the commit: tell the floors above that the workspace's status changed (its sockets re-check)."""
    transaction.on_commit(lambda: workspace_status_changed.send(
        sender=Workspace, workspace=workspace, status=workspace.status))
