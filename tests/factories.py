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


def document_ingest_now(document) -> str:
    """Run the ingestion pipeline for `document` here and now (in the current workspace schema), as the worker would;
    returns the outcome ("indexed", ...). The document's job was also queued on commit: when a worker of the session
    takes it at the same moment, that run holds the document's lock (Busy), and this waits for it to finish instead.
    A delivery after this run finds the document already indexed and writes nothing; a worker's run that ended
    before this one started counts as this outcome too."""
    import time

    from documents import pipeline
    from documents.models import Document, DocumentStatus

    try:
        result = pipeline.document_ingest_run(document_id=document.pk, run_token=document.run_token).result
        # The worker took the job on commit and finished it before this run started: the document is indexed, by
        # the same pipeline, and this run rightly wrote nothing ("already_indexed"). The outcome is the same.
        return "indexed" if result == "already_indexed" else result
    except pipeline.Busy:
        deadline = time.monotonic() + 180
        while True:
            status = Document.objects.filter(pk=document.pk).values_list("status", flat=True).first()
            if status in (DocumentStatus.INDEXED, DocumentStatus.FAILED):
                return "indexed" if status == DocumentStatus.INDEXED else str(status)
            assert time.monotonic() < deadline, f"the worker's run of document {document.pk} never finished: {status}"
            time.sleep(0.1)
