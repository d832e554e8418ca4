from datetime import timedelta

from django.core.management.base import CommandParser
from django.utils import timezone

from accounts.services import api_key_create
from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound, ValidationFailed
from tenants.selectors import workspace_get


class Command(OperatorCommand):
    help = "Create a workspace API key. The key is printed once; only its hash is stored."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--scopes", default="read,write,chat")
        parser.add_argument("--expires-in-days", type=int, default=None,
                            help="Refuse the key after this many days (default: never expires).")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"No workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        days = options["expires_in_days"]
        if days is not None and not 1 <= days <= 3650:
            raise ValidationFailed("--expires-in-days is between 1 and 3650.",
                                   details={"fields": {"expires_in_days": ["1 to 3650."]}})
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        key, raw = api_key_create(workspace=workspace, name=options["name"], scopes=scopes, expires_at=expires_at)
        expiry = key.expires_at.isoformat() if key.expires_at else None
        self.emit(
            {"workspace": workspace.slug, "id": key.pk, "name": key.name, "prefix": key.prefix, "scopes": key.scopes,
             "expires_at": expiry, "key": raw},
            f"{raw}\n(shown once; scopes {', '.join(key.scopes)}; "
            f"{f'expires {expiry}' if expiry else 'never expires'})",
        )
