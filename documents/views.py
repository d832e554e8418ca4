from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.permissions import workspace_permission_required


@workspace_permission_required("knowledge.view")
def knowledge_index(request: HttpRequest) -> HttpResponse:
    # Not built yet (issue #3): the page says so instead of pretending.
    return render(request, "dashboard/not_built.html", {"section": "Knowledge", "issue": 3})
