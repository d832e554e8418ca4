from django.core.management.base import CommandParser
from django_tenants.utils import tenant_context

from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound
from embeds import selectors, services
from tenants.selectors import workspace_get


class Command(OperatorCommand):
    help = (
        "Create a chat widget (embed code) for a workspace and print its public key and the snippet to paste into "
        "the website. --origin is required: only the listed origins may show the widget."
    )

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="The workspace's slug.")
        parser.add_argument("--name", required=True, help="A name for the widget, e.g. the site it is on.")
        parser.add_argument("--origin", action="append", required=True, dest="origins",
                            help="An origin allowed to show the widget (https://shop.example, https://*.shop.example);"
                                 " repeat for several.")
        parser.add_argument("--language", choices=["auto", "en", "de"], default=None)
        parser.add_argument("--identity-secret", action="store_true",
                            help="Also turn identity verification on and print its secret (shown once).")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"No workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND)
        theme = {"language": options["language"]} if options["language"] else None
        with tenant_context(workspace):
            embed = services.embed_create(name=options["name"], allowed_origins=options["origins"], theme=theme)
            secret = None
            if options["identity_secret"]:
                embed, secret = services.embed_identity_secret_rotate(embed=embed)
            snippet = selectors.embed_snippet(embed=embed, base_url=selectors.workspace_base_url(workspace))
        data = {"public_key": embed.public_key, "snippet": snippet, "id": embed.pk, "name": embed.name,
                "allowed_origins": embed.allowed_origins}
        if secret is not None:
            data["identity_secret"] = secret
        human = f"{snippet}\n(public key {embed.public_key}; allowed origins: {', '.join(embed.allowed_origins)})"
        if secret is not None:
            human += f"\nidentity secret (shown once): {secret}"
        self.emit(data, human)
