from django.db.models import Count

from config.commands import OperatorCommand
from tenants.selectors import workspace_host, workspace_list


class Command(OperatorCommand):
    help = "List workspaces."

    def handle(self, *args, **options) -> None:
        rows = [
            {
                "slug": w.slug, "name": w.name, "schema": w.schema_name, "plan": w.plan, "status": w.status,
                "domain": workspace_host(workspace=w), "members": w.member_count, "created_at": w.created_at.isoformat(),
            }
            for w in workspace_list().annotate(member_count=Count("memberships"))
        ]
        human = "\n".join(f"{r['slug']:<30} {r['plan']:<10} {r['status']:<10} {r['domain']}" for r in rows) or "(none)"
        self.emit(rows, human)
