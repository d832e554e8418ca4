from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.permissions import workspace_permission_required


@workspace_permission_required("widgets.view")
def widgets_index(request: HttpRequest) -> HttpResponse:
    # Not built yet (issue #5): the page says so instead of pretending.
    return render(request, "dashboard/not_built.html", {"section": "Widgets", "issue": 5})
