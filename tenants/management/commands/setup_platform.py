from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from tenants import provisioning
from tenants.services import public_site_ensure


class Command(OperatorCommand):
    help = "Make the platform ready after migrating: public site domains, the schema template, the warm pool."

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pool", type=int, default=None, help="Warm pool size (default: WORKSPACE_POOL_SIZE).")

    def handle(self, *args, **options) -> None:
        domains = public_site_ensure()
        template = provisioning.template_current()
        built = provisioning.pool_refill(options["pool"])
        self.emit(
            {"public_domains": domains, "template": template.fingerprint[:12], "pool_built": built},
            f"public site on {', '.join(domains)}; template {template.fingerprint[:12]}; {built} pool schemas built",
        )
