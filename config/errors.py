"""The one error family of the project and its renderings (DRF handler, JSON for non-DRF paths).

Every error a client can see is an ApplicationError (or converted to one) and is rendered as
`{"error": {"code": ..., "message": ..., "details": {...}}}`. Codes are stable: clients and tests rely on them.
"""
from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from django.db import DataError, InterfaceError, OperationalError
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    INVALID = "invalid"
    MALFORMED_REQUEST = "malformed_request"
    NOT_AUTHENTICATED = "not_authenticated"
    AUTHENTICATION_FAILED = "authentication_failed"
    INVALID_API_KEY = "invalid_api_key"
    API_KEY_REVOKED = "api_key_revoked"
    API_KEY_EXPIRED = "api_key_expired"
    PERMISSION_DENIED = "permission_denied"
    NOT_A_MEMBER = "not_a_member"
    NOT_FOUND = "not_found"
    WORKSPACE_NOT_FOUND = "workspace_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    SLUG_TAKEN = "slug_taken"
    SLUG_RESERVED = "slug_reserved"
    SLUG_INVALID = "slug_invalid"
    EMAIL_TAKEN = "email_taken"
    WEAK_PASSWORD = "weak_password"
    INVITATION_INVALID = "invitation_invalid"
    LAST_OWNER = "last_owner"
    RATE_LIMITED = "rate_limited"
    VISITOR_DAILY_LIMIT = "visitor_daily_limit"  # the widget's answers per visitor per day (429)
    EMBED_DAILY_LIMIT = "embed_daily_limit"  # the widget's answers per embed per day (429)
    QUOTA_EXCEEDED = "quota_exceeded"
    PLAN_LIMIT = "plan_limit"
    CURATED_LIMIT = "curated_limit"  # MAX_CURATED_ANSWERS per workspace, MAX_IMPORT_PHRASINGS per CSV import (400)
    PLAN_UNKNOWN = "plan_unknown"
    WORKSPACE_INACTIVE = "workspace_inactive"
    WRONG_SCHEMA = "wrong_schema"
    SERVICE_UNAVAILABLE = "service_unavailable"
    # documents (issue #3)
    DUPLICATE_DOCUMENT = "duplicate_document"
    FILE_TOO_LARGE = "file_too_large"
    FILE_REQUIRED = "file_required"
    TOO_MANY_FILES = "too_many_files"
    DOCUMENT_BUSY = "document_busy"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    TIME_LIMIT = "time_limit"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    FILE_MISSING = "file_missing"
    INGEST_ERROR = "ingest_error"
    SERVER_ERROR = "server_error"
    ARCHIVE_INVALID = "archive_invalid"
    ARCHIVE_INCOMPATIBLE = "archive_incompatible"
    # knowledge base: content that cannot be read (permanent) and URL imports
    UNSUPPORTED_TYPE = "unsupported_type"
    CORRUPT_FILE = "corrupt_file"
    ENCRYPTED_FILE = "encrypted_file"
    FILE_TOO_COMPLEX = "file_too_complex"
    EMPTY_DOCUMENT = "empty_document"
    URL_INVALID = "url_invalid"
    URL_FORBIDDEN = "url_forbidden"
    URL_UNREACHABLE = "url_unreachable"
    URL_TIMEOUT = "url_timeout"
    URL_TOO_LARGE = "url_too_large"
    URL_TOO_MANY_REDIRECTS = "url_too_many_redirects"
    EMBEDDING_UNAVAILABLE = "embedding_unavailable"
    SOURCE_BUSY = "source_busy"  # a website source already has a crawl or re-sync going (issue #17)
    # conversations and the real-time protocol (issue #4, docs/websocket-protocol.md)
    MALFORMED_FRAME = "malformed_frame"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TYPE = "unknown_type"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    INVALID_SEQ = "invalid_seq"
    HISTORY_TRUNCATED = "history_truncated"
    ANSWER_IN_PROGRESS = "answer_in_progress"
    ANSWER_FAILED = "answer_failed"
    ANSWER_TIMEOUT = "answer_timeout"
    CONVERSATION_CLOSED = "conversation_closed"
    # human handoff (issue #6)
    CONVERSATION_TAKEN = "conversation_taken"
    CONVERSATION_STATE = "conversation_state"
    NOT_ASSIGNED = "not_assigned"
    ACCESS_REVOKED = "access_revoked"  # an open socket lost its role, embed or workspace (chat.authority)
    CUSTOMER_ONLY = "customer_only"  # staff and API keys never write as a widget conversation's customer


class ApplicationError(Exception):
    """A failure with a stable code, a human message and structured details."""

    status_code: int = 400
    default_code: ErrorCode = ErrorCode.INVALID
    retry_after: int | None = None  # seconds; sent as Retry-After when set

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | str | None = None,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = str(code or self.default_code)
        self.details = details or {}
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(ApplicationError):
    status_code = 400
    default_code = ErrorCode.INVALID


class NotAuthenticated(ApplicationError):
    status_code = 401
    default_code = ErrorCode.NOT_AUTHENTICATED


class PermissionDenied(ApplicationError):
    status_code = 403
    default_code = ErrorCode.PERMISSION_DENIED


class NotFound(ApplicationError):
    status_code = 404
    default_code = ErrorCode.NOT_FOUND


class Conflict(ApplicationError):
    status_code = 409
    default_code = ErrorCode.CONFLICT


class RateLimited(ApplicationError):
    status_code = 429
    default_code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str = "Too many requests; slow down.", *, retry_after: int = 60, **kwargs: Any):
        details = {"retry_after": retry_after, **kwargs.pop("details", {})}
        super().__init__(message, details=details, **kwargs)
        self.retry_after = retry_after


class QuotaExceeded(ApplicationError):
    status_code = 402
    default_code = ErrorCode.QUOTA_EXCEEDED


class ServiceUnavailable(ApplicationError):
    status_code = 503
    default_code = ErrorCode.SERVICE_UNAVAILABLE


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_json_response(error: ApplicationError) -> JsonResponse:
    response = JsonResponse(error.as_dict(), status=error.status_code)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


_DRF_CODES: list[tuple[type[Exception], ErrorCode]] = [
    (drf_exceptions.ParseError, ErrorCode.MALFORMED_REQUEST),
    (drf_exceptions.NotAuthenticated, ErrorCode.NOT_AUTHENTICATED),
    (drf_exceptions.AuthenticationFailed, ErrorCode.AUTHENTICATION_FAILED),
    (drf_exceptions.PermissionDenied, ErrorCode.PERMISSION_DENIED),
    (drf_exceptions.NotFound, ErrorCode.NOT_FOUND),
    (drf_exceptions.MethodNotAllowed, ErrorCode.METHOD_NOT_ALLOWED),
    (drf_exceptions.UnsupportedMediaType, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (drf_exceptions.NotAcceptable, ErrorCode.NOT_ACCEPTABLE),
    (drf_exceptions.Throttled, ErrorCode.RATE_LIMITED),
    (drf_exceptions.ValidationError, ErrorCode.INVALID),
]


def _drf_error(exc: drf_exceptions.APIException) -> ApplicationError:
    code = next((c for klass, c in _DRF_CODES if isinstance(exc, klass)), ErrorCode.INVALID)
    if isinstance(exc, drf_exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return ValidationFailed("The request is not valid.", details={"fields": _plain(detail)})
    # Authentication classes may carry a more precise code (e.g. invalid_api_key) in the detail's code.
    detail_code = getattr(exc.detail, "code", None)
    if detail_code and detail_code in ErrorCode._value2member_map_ and detail_code not in {"invalid", "error"}:
        code = ErrorCode(detail_code)
    if isinstance(exc, drf_exceptions.Throttled):
        return RateLimited(str(exc.detail), retry_after=int(exc.wait or 60))
    return ApplicationError(str(exc.detail), code=code, status_code=exc.status_code)


def _plain(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _plain(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_plain(value) for value in detail]
    return str(detail)


def _transaction_conflict(exc: Exception) -> bool:
    from config.db import is_transaction_conflict

    return is_transaction_conflict(exc)


def to_application_error(exc: Exception) -> ApplicationError | None:
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, drf_exceptions.APIException):
        return _drf_error(exc)
    if isinstance(exc, Http404):
        return NotFound("Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return PermissionDenied(str(exc) or "You do not have permission to do this.")
    if isinstance(exc, DataError):
        # The database refused a value (text with NUL, a number out of range, ...): the request's fault, not ours.
        # Parsers and serializers catch the known cases first; this keeps the rest a 400 instead of a 500.
        logger.warning("database refused a value: %s", str(exc).splitlines()[0][:200])
        return ValidationFailed("A value in the request cannot be stored.", details={"reason": "unstorable_value"})
    if isinstance(exc, OperationalError) and _transaction_conflict(exc):
        # PostgreSQL aborted this request's transaction to break a deadlock (or a serialization conflict) with
        # another one; nothing of it was kept, and the same request shortly after succeeds.
        logger.warning("transaction conflict: %s", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        error = ServiceUnavailable("Another change to the same data got in the way; nothing was changed. Try again.",
                                   details={"reason": "transaction_conflict"})
        error.retry_after = 1
        return error
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database went away or cut our connection (a restart, a failover, pg_terminate_backend): not the
        # request's fault, and retrying shortly works (the next request reconnects). A 503, not a bare 500.
        logger.warning("database unavailable: %s", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return ServiceUnavailable("The service is briefly unavailable; try again in a moment.",
                                  details={"reason": "database_unavailable"})
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF EXCEPTION_HANDLER: every error in the one shape; unexpected errors become a logged 500 in that shape."""
    error = to_application_error(exc)
    if error is None:
        logger.exception("unhandled API error", exc_info=exc)
        error = ApplicationError("Something went wrong on our side.", code=ErrorCode.SERVER_ERROR, status_code=500)
    response = Response(error.as_dict(), status=error.status_code)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    if error.status_code == 401:
        response["WWW-Authenticate"] = 'Api-Key realm="api"'
    return response
