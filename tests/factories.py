"""Test data built through the real services (never by writing rows behind their back)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

import factory

from accounts.models import User
from accounts.roles import Role
from accounts.services import membership_create, workspace_signup
from tenants.models import Workspace

PASSWORD = "Test-password-4711"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("email",)

    email = factory.LazyFunction(lambda: f"user-{secrets.token_hex(4)}@example.test")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @classmethod
    def _after_postgeneration(cls, instance, create, results=None):  # persist the hashed password
        if create:
            instance.save()


@dataclass
class WorkspaceWithOwner:
    workspace: Workspace
    owner: User

    @property
    def host(self) -> str:
        return self.workspace.domains.get(is_primary=True).domain


def unique_slug(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def workspace_with_owner(*, slug: str | None = None, name: str = "Test Co") -> WorkspaceWithOwner:
    owner_email = f"owner-{secrets.token_hex(4)}@example.test"
    owner, result = workspace_signup(email=owner_email, password=PASSWORD, workspace_name=name, slug=slug or unique_slug())
    return WorkspaceWithOwner(workspace=result.workspace, owner=owner)


def member(workspace: Workspace, role: Role | str) -> User:
    user = UserFactory()
    membership_create(workspace=workspace, user=user, role=str(role))
    return user
