from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.permissions import workspace_permission_required


@workspace_permission_required("analytics.view")
def analytics_index(request: HttpRequest) -> HttpResponse:
    # Not built yet (issue #7): the page says so instead of pretending.
    return render(request, "dashboard/not_built.html", {"section": "Analytics", "issue": 7})
