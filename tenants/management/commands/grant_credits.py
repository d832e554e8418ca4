from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound
from tenants import billing
from tenants.selectors import workspace_get


class Command(OperatorCommand):
    help = ("Add credits to (or, with a negative amount, take them from) a workspace's current billing period, with "
            "a reason. Appends an adjustment to the credit ledger and a row to the audit log.")

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--amount", required=True, type=int, help="Credits (answers); negative takes back.")
        parser.add_argument("--reason", required=True, help="Why; shown in the ledger and the audit log.")
        parser.add_argument("--reference", default="", help="Optional idempotency key: a repeat is refused.")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"There is no workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND,
                           details={"slug": options["workspace"]})
        entry = billing.credits_grant(
            workspace=workspace, amount=options["amount"], reason=options["reason"], actor_label="operator",
            reference=options["reference"],
        )
        subscription = billing.subscription_get(workspace=workspace)
        balance = billing.credit_balance(workspace=workspace)
        data = {
            "workspace": workspace.slug, "entry_id": entry.pk, "kind": entry.kind, "amount": entry.amount,
            "reason": entry.reason, "reference": entry.reference, "balance": balance,
            "period": {"start": subscription.period_start.isoformat(), "end": subscription.period_end.isoformat()},
        }
        self.emit(data, f"{entry.amount:+d} credits for {workspace.slug} ({entry.reason}); balance now {balance}")
