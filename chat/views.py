from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.permissions import workspace_permission_required


@workspace_permission_required("conversations.view")
def conversations_index(request: HttpRequest) -> HttpResponse:
    # Not built yet (issue #4): the page says so instead of pretending.
    return render(request, "dashboard/not_built.html", {"section": "Conversations", "issue": 4})
