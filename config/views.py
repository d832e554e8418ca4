from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.errors import NotFound, error_json_response
from config.middleware import wants_json


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_json(request):
        return error_json_response(NotFound("Not found."))
    return render(request, "errors/404.html", status=404)
