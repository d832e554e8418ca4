from django.core.management.base import CommandParser

from config.commands import OperatorCommand
from config.errors import ErrorCode, NotFound
from tenants import billing
from tenants.selectors import workspace_get


class Command(OperatorCommand):
    help = ("A workspace's usage for its current billing period (or the period that started in --month): meters, "
            "credits and the invoice preview, computed from the credit ledger.")

    def add_command_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="Workspace slug.")
        parser.add_argument("--month", default=None, help="YYYY-MM: the billing period that started in that month.")

    def handle(self, *args, **options) -> None:
        workspace = workspace_get(slug=options["workspace"])
        if workspace is None:
            raise NotFound(f"There is no workspace {options['workspace']!r}.", code=ErrorCode.WORKSPACE_NOT_FOUND,
                           details={"slug": options["workspace"]})
        report = billing.usage_summary(workspace=workspace, month=options["month"])
        period, invoice = report["period"], report["invoice"]
        lines = [f"{workspace.slug} · plan {report['plan']['code']} · period {period['start']} – {period['end']}"]
        for code, meter in report["meters"].items():
            used = "not measured" if meter["used"] is None else meter["used"]
            limit = "unlimited" if meter["limit"] is None else meter["limit"]
            percent = "" if meter["percent"] is None else f"  ({meter['percent']} %)"
            lines.append(f"  {meter['label']:<10} {used} / {limit}{percent}")
        credits = report["credits"]
        lines.append(f"  credits: balance {credits['balance']}, used {credits['used']} of {credits['available']}, "
                     f"overage {credits['overage']}")
        for line in invoice["lines"]:
            lines.append(f"  {line['description']:<50} {line['quantity']:>6} {line['amount']:>10}")
        lines.append(f"  {'total':<50} {'':>6} {invoice['total']:>10} {invoice['currency']}")
        self.emit(report, "\n".join(lines))
