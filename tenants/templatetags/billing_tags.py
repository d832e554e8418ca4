"""`{% usage_banner %}`: the dashboard's warning when a meter has reached 80 % or 100 % of the plan this period."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template

from tenants import billing

register = template.Library()


@dataclass
class BannerAlert:
    meter: str
    label: str
    threshold: int


@register.inclusion_tag("tenants/_usage_banner.html", takes_context=True)
def usage_banner(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    workspace = getattr(request, "tenant", None)
    # `can` comes from the accounts context processor: only people who may see billing get the banner.
    if workspace is None or workspace.schema_name == "public" or not (context.get("can") or {}).get("billing_view"):
        return {"alerts": []}
    alerts = [BannerAlert(meter=a.meter, label=billing.METERS[a.meter].label, threshold=a.threshold)
              for a in billing.usage_alerts_current(workspace=workspace)]
    return {"alerts": alerts, "request": request}
