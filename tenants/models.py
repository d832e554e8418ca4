from __future__ import annotations

from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class WorkspaceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Workspace(TenantMixin):
    """A customer's workspace: one PostgreSQL schema holds everything it owns."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    plan = models.CharField(max_length=40, default="free")
    status = models.CharField(max_length=20, choices=WorkspaceStatus.choices, default=WorkspaceStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    # Schemas are provisioned and purged by tenants.services, never implicitly by save()/delete().
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return self.schema_name == "public"


class Domain(DomainMixin):
    pass


class SchemaTemplate(models.Model):
    """The DDL of the migrated template schema, rendered once per migration state (see tenants.provisioning)."""

    fingerprint = models.CharField(max_length=64, unique=True)
    sql = models.TextField()
    migrations = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)


class PooledSchema(models.Model):
    """A pre-provisioned, empty workspace schema waiting to be taken by a signup."""

    schema_name = models.CharField(max_length=63, unique=True)
    fingerprint = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
