from django.core.management.base import CommandParser

from accounts.models import User
from accounts.services import workspace_signup
from config.commands import OperatorCommand
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
            raise SystemExit("demo workspace exists without the demo user; delete it with delete_workspace first")
        url = workspace_url(workspace=workspace)
        self.emit(
            {"slug": workspace.slug, "url": url, "email": DEMO_EMAIL, "password": DEMO_PASSWORD, "created": created},
            f"demo workspace {'created' if created else 'ready'} at {url}",
        )
