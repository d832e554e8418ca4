from django.core.management.base import CommandParser

from accounts.services import api_key_create
from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound
from tenants.selectors import workspace_get


class Command(OperatorCommand):
    help = "Create a workspace API key. The key is printed once; only its hash is stored."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--scopes", default="read,write,chat")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"No workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        key, raw = api_key_create(workspace=workspace, name=options["name"], scopes=scopes)
        self.emit(
            {"workspace": workspace.slug, "id": key.pk, "name": key.name, "prefix": key.prefix, "scopes": key.scopes, "key": raw},
            f"{raw}\n(shown once; scopes {', '.join(key.scopes)})",
        )
