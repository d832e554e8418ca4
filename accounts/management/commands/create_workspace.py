import secrets

from django.core.management.base import CommandParser

from accounts.services import workspace_signup
from config.commands import OperatorCommand
from tenants.selectors import workspace_url


class Command(OperatorCommand):
    help = "Create a workspace with its owner (the owner's account is created if it does not exist)."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument("--owner-password", default=None, help="Generated and printed if omitted.")
        parser.add_argument("--plan", default="free")
        parser.add_argument("--domain", default=None, help="Host name; default <slug>.<BASE_DOMAIN>.")

    def handle(self, *args, **options) -> None:
        password = options["owner_password"] or secrets.token_urlsafe(12)
        user, result = workspace_signup(
            email=options["owner_email"], password=password, workspace_name=options["name"], slug=options["slug"],
            plan=options["plan"], domain=options["domain"], existing_user_ok=True,
        )
        workspace = result.workspace
        data = {
            "slug": workspace.slug, "name": workspace.name, "schema": workspace.schema_name, "plan": workspace.plan,
            "url": workspace_url(workspace=workspace), "owner_email": user.email,
            "owner_password": None if options["owner_password"] else password,
            "provisioned_by": result.method, "ms": round(result.timings_ms["total"], 1),
        }
        human = f"Created workspace {workspace.slug} at {data['url']} (owner {user.email}) in {data['ms']} ms"
        if not options["owner_password"]:
            human += f"\nOwner password: {password}"
        self.emit(data, human)
