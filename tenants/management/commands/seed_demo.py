from django.core.management.base import CommandParser

from accounts.models import User
from accounts.services import workspace_signup
from config.commands import OperatorCommand
from config.errors import Conflict
from tenants.selectors import workspace_get, workspace_url

DEMO_EMAIL = "demo@customercare.local"
DEMO_PASSWORD = "demo-password-123"


class Command(OperatorCommand):
    help = "Create the demo workspace and its owner if they don't exist (idempotent)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", default="demo")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["slug"])
        created = workspace is None
        if created:
            _user, result = workspace_signup(
                email=DEMO_EMAIL, password=DEMO_PASSWORD, workspace_name="Demo Company", slug=options["slug"],
                full_name="Demo Owner", existing_user_ok=True,
            )
            workspace = result.workspace
        elif not User.objects.filter(email=DEMO_EMAIL).exists():
            # In the error shape (on stdout with --json), not a bare SystemExit message.
            raise Conflict("The demo workspace exists without the demo user; delete it with delete_workspace first.",
                           details={"slug": workspace.slug})
        url = workspace_url(workspace=workspace)
        samples = _seed_sample_documents(workspace)
        self.emit(
            {"slug": workspace.slug, "url": url, "email": DEMO_EMAIL, "password": DEMO_PASSWORD, "created": created,
             "sample_documents": samples},
            f"demo workspace {'created' if created else 'ready'} at {url}"
            + (f" ({samples} sample documents queued for indexing)" if samples else ""),
        )


def _seed_sample_documents(workspace) -> int:
    """The knowledge base's sample documents (documents/samples/), through the upload service; idempotent."""
    from django.db import connection

    from documents.services import document_samples_add

    connection.set_tenant(workspace)
    try:
        return len(document_samples_add(uploaded_by=User.objects.filter(email=DEMO_EMAIL).first()))
    finally:
        connection.set_schema_to_public()
