from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.errors import NotFound, error_json_response
from config.middleware import wants_json


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if wants_json(request):
        return error_json_response(NotFound("Not found."))
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: also reached by errors raised in a middleware (the workspace lookup, the membership check), where
    no view's error handling applies. API clients get the error shape; a database that cut our connection is a
    503 service_unavailable (retry), not a 500. Django calls this while handling the exception, so it is at hand."""
    import sys

    from django.template import loader

    from config.errors import ApplicationError, ErrorCode, ServiceUnavailable, to_application_error

    exc = sys.exc_info()[1]
    error = to_application_error(exc) if isinstance(exc, Exception) else None
    if not isinstance(error, ServiceUnavailable):
        error = ApplicationError("Something went wrong on our side.", code=ErrorCode.SERVER_ERROR, status_code=500)
    if wants_json(request):
        return error_json_response(error)
    # No context processors and no database: the page must render whatever is down.
    return HttpResponse(loader.get_template("500.html").render(), status=error.status_code)
