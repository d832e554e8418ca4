"""REST endpoints of the knowledge base (/api/v1/documents/...): one view per operation, thin.

Uploads are multipart (`file`, or `files` on the batch endpoint); a file over the size cap is cut off while the
request is parsed (it is never written whole to a temporary file a second time) and answered with 413.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, ErrorCode, ValidationFailed
from config.pagination import ApiPagination
from documents import selectors, services
from documents.models import DocumentSource, DocumentStatus

try:  # Django >= 5.0.7 / 4.2.14
    from django.core.exceptions import TooManyFilesSent
except ImportError:  # pragma: no cover
    TooManyFilesSent = TooManyFieldsSent  # type: ignore[misc,assignment]


# --- serializers -----------------------------------------------------------------------------------------------


class DocumentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    source = serializers.CharField()
    source_url = serializers.CharField()
    original_name = serializers.CharField()
    content_type = serializers.CharField(help_text="Sniffed from the content: pdf, docx, txt, md, html or csv.")
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    status = serializers.CharField(help_text="queued, processing, retrying, indexed or failed.")
    stage = serializers.CharField(help_text="upload, fetch, parse, chunk, embed, index or done.")
    stage_progress = serializers.IntegerField(help_text="0-100 within the current stage.")
    progress = serializers.SerializerMethodField(help_text="0-100 over the whole job.")
    note = serializers.SerializerMethodField(help_text="Where the document is and why, in plain words.")
    error_code = serializers.CharField()
    error_message = serializers.CharField()
    attempts = serializers.IntegerField()
    chunk_count = serializers.IntegerField()
    token_count = serializers.IntegerField()
    version = serializers.IntegerField()
    queue = serializers.CharField()
    queued_at = serializers.DateTimeField(allow_null=True)
    next_retry_at = serializers.DateTimeField(allow_null=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    embedding_model = serializers.CharField()
    timings = serializers.DictField(child=serializers.FloatField(), help_text="Milliseconds per stage of the last run.")
    uploaded_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    indexed_at = serializers.DateTimeField(allow_null=True)

    def get_progress(self, document: Any) -> int:
        return services.document_progress_overall(
            stage=document.stage, stage_progress=document.stage_progress, status=document.status
        )

    def get_note(self, document: Any) -> str:
        return selectors.document_state_note(document)

    def get_uploaded_by(self, document: Any) -> str | None:
        return document.uploaded_by.email if document.uploaded_by_id else None


class ChunkOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    ordinal = serializers.IntegerField()
    text = serializers.CharField()
    token_count = serializers.IntegerField()
    heading_path = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)


class DocumentDetailOutputSerializer(DocumentOutputSerializer):
    text_preview = serializers.CharField(help_text="The beginning of the parsed text.")
    chunks_preview = serializers.SerializerMethodField()

    def get_chunks_preview(self, document: Any) -> list[dict[str, Any]]:
        return ChunkOutputSerializer(selectors.document_chunks(document=document, limit=10), many=True).data


class ErrorOutputSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


# --- upload plumbing -------------------------------------------------------------------------------------------


class SizeCapUploadHandler(FileUploadHandler):
    """First in the chain: a file that passes the cap is skipped while it streams in, and remembered."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.cap = services.max_upload_bytes()
        self.too_large: list[str] = []

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > self.cap:
            self.too_large.append(services.filename_sanitize(self.file_name))
            raise SkipFile
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


class DocumentsApiView(APIView):
    """Maps request-parsing refusals (too many files, body too big) to the error shape instead of a bare 400/500."""

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST" and request.content_type == "multipart/form-data":
            handler = SizeCapUploadHandler(request)
            request.upload_handlers.insert(0, handler)
            request._size_cap_handler = handler  # type: ignore[attr-defined]
        return super().initialize_request(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, TooManyFilesSent):
            limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
            exc = ApplicationError(
                f"Send at most {limit} files per request (split larger batches; the dashboard does this for you).",
                code=ErrorCode.TOO_MANY_FILES, status_code=400, details={"max_files": limit},
            )
        elif isinstance(exc, (TooManyFieldsSent, RequestDataTooBig)):
            exc = ApplicationError("The request is too large.", code=ErrorCode.MALFORMED_REQUEST, status_code=413)
        return super().handle_exception(exc)

    def _files_too_large(self, request: Request) -> list[str]:
        handler = getattr(request._request, "_size_cap_handler", None)
        return list(handler.too_large) if handler else []

    def _one_file(self, request: Request, field: str = "file") -> Any:
        files = request.FILES.getlist(field)
        too_large = self._files_too_large(request)
        if too_large:
            raise services.file_too_large_error(too_large[0])
        if not files:
            raise ApplicationError(f"Attach the file as multipart form field “{field}”.", code=ErrorCode.FILE_REQUIRED,
                                   details={"field": field})
        if len(files) > 1:
            raise ValidationFailed(f"Send one file in “{field}”; use /api/v1/documents/batch/ for many.",
                                   code=ErrorCode.TOO_MANY_FILES)
        return files[0]


def _document_response(document: Any, code: int = status.HTTP_200_OK) -> Response:
    return Response(DocumentOutputSerializer(document).data, status=code)


# --- endpoints -------------------------------------------------------------------------------------------------


class DocumentListUploadApi(DocumentsApiView):
    required_permission = {"GET": "knowledge.view", "POST": "knowledge.manage"}
    parser_classes = [MultiPartParser, FormParser]

    class FilterSerializer(serializers.Serializer):
        q = serializers.CharField(required=False, allow_blank=True, max_length=200)
        status = serializers.ChoiceField(choices=DocumentStatus.values, required=False)
        source = serializers.ChoiceField(choices=DocumentSource.values, required=False)

    class UploadInputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="The document (PDF, DOCX, TXT, MD, HTML, CSV).")
        title = serializers.CharField(required=False, allow_blank=True, max_length=300)

    @extend_schema(
        parameters=[OpenApiParameter("q", str), OpenApiParameter("status", str), OpenApiParameter("source", str)],
        responses=DocumentOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        documents = selectors.document_list(
            search=filters.validated_data.get("q"), status=filters.validated_data.get("status"),
            source=filters.validated_data.get("source"),
        )
        paginator = ApiPagination()
        page = paginator.paginate_queryset(documents, request, view=self)
        return paginator.get_paginated_response(DocumentOutputSerializer(page, many=True).data)

    @extend_schema(request={"multipart/form-data": UploadInputSerializer}, responses={201: DocumentOutputSerializer})
    def post(self, request: Request) -> Response:
        uploaded = self._one_file(request)
        title = request.data.get("title")
        if title is not None and len(str(title)) > 300:
            raise ValidationFailed("The title is longer than 300 characters.", details={"field": "title"})
        document = services.document_upload(uploaded_file=uploaded, uploaded_by=request.user, title=title)
        return _document_response(document, status.HTTP_201_CREATED)


class DocumentBatchUploadApi(DocumentsApiView):
    required_permission = "knowledge.manage"
    parser_classes = [MultiPartParser]

    class BatchInputSerializer(serializers.Serializer):
        files = serializers.ListField(child=serializers.FileField())

    class BatchResultSerializer(serializers.Serializer):
        filename = serializers.CharField()
        status = serializers.IntegerField()
        document = DocumentOutputSerializer(required=False)
        error = ErrorOutputSerializer(required=False)

    @extend_schema(request={"multipart/form-data": BatchInputSerializer},
                   responses={200: BatchResultSerializer(many=True)})
    def post(self, request: Request) -> Response:
        files = request.FILES.getlist("files")
        too_large = self._files_too_large(request)
        if not files and not too_large:
            raise ApplicationError("Attach the files as multipart form field “files”.", code=ErrorCode.FILE_REQUIRED,
                                   details={"field": "files"})
        results: list[dict[str, Any]] = []
        for name in too_large:
            error = services.file_too_large_error(name)
            results.append({"filename": name, "status": error.status_code, "error": error.as_dict()["error"]})
        for uploaded in files:
            name = services.filename_sanitize(uploaded.name)
            try:
                document = services.document_upload(uploaded_file=uploaded, uploaded_by=request.user)
            except ApplicationError as error:
                results.append({"filename": name, "status": error.status_code, "error": error.as_dict()["error"]})
            else:
                results.append({"filename": name, "status": 201, "document": DocumentOutputSerializer(document).data})
        return Response({"results": results})


class DocumentTextCreateApi(DocumentsApiView):
    required_permission = "knowledge.manage"
    parser_classes = [JSONParser, FormParser]

    class TextInputSerializer(serializers.Serializer):
        title = serializers.CharField(max_length=300)
        text = serializers.CharField(trim_whitespace=False, max_length=services.MAX_TEXT_CHARS)
        format = serializers.ChoiceField(choices=["text", "markdown"], default="text")

    @extend_schema(request=TextInputSerializer, responses={201: DocumentOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.TextInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        document = services.document_create_text(
            title=data["title"], text=data["text"], markdown=data["format"] == "markdown", uploaded_by=request.user
        )
        return _document_response(document, status.HTTP_201_CREATED)


class DocumentFaqCreateApi(DocumentsApiView):
    required_permission = "knowledge.manage"
    parser_classes = [JSONParser, FormParser]

    class FaqInputSerializer(serializers.Serializer):
        question = serializers.CharField(max_length=1000)
        answer = serializers.CharField(max_length=100_000)
        title = serializers.CharField(required=False, allow_blank=True, max_length=300)

    @extend_schema(request=FaqInputSerializer, responses={201: DocumentOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.FaqInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = services.document_create_faq(uploaded_by=request.user, **serializer.validated_data)
        return _document_response(document, status.HTTP_201_CREATED)


class DocumentUrlImportApi(DocumentsApiView):
    required_permission = "knowledge.manage"
    parser_classes = [JSONParser, FormParser]

    class UrlInputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=services.MAX_URL)
        title = serializers.CharField(required=False, allow_blank=True, max_length=300)

    @extend_schema(request=UrlInputSerializer, responses={201: DocumentOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.UrlInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document = services.document_import_url(uploaded_by=request.user, **serializer.validated_data)
        return _document_response(document, status.HTTP_201_CREATED)


class DocumentFailedListApi(DocumentsApiView):
    required_permission = "knowledge.view"

    @extend_schema(responses=DocumentOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = ApiPagination()
        page = paginator.paginate_queryset(selectors.document_failed_list(), request, view=self)
        return paginator.get_paginated_response(DocumentOutputSerializer(page, many=True).data)


class WorkspaceReindexApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    class ReindexOutputSerializer(serializers.Serializer):
        queued = serializers.IntegerField()

    @extend_schema(operation_id="documents_reindex_all", request=None, responses={202: ReindexOutputSerializer})
    def post(self, request: Request) -> Response:
        count = services.workspace_reindex(actor=request.user)
        return Response({"queued": count}, status=status.HTTP_202_ACCEPTED)


class DocumentDetailApi(DocumentsApiView):
    required_permission = {"GET": "knowledge.view", "DELETE": "knowledge.manage"}

    @extend_schema(responses=DocumentDetailOutputSerializer)
    def get(self, request: Request, document_id: int) -> Response:
        document = selectors.document_get(document_id=document_id)
        return Response(DocumentDetailOutputSerializer(document).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, document_id: int) -> Response:
        services.document_delete(document=selectors.document_get(document_id=document_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DocumentChunksApi(DocumentsApiView):
    required_permission = "knowledge.view"

    @extend_schema(responses=ChunkOutputSerializer(many=True))
    def get(self, request: Request, document_id: int) -> Response:
        document = selectors.document_get(document_id=document_id)
        paginator = LimitOffsetPagination()
        paginator.default_limit = 50
        limit = paginator.get_limit(request) or 50
        offset = paginator.get_offset(request)
        chunks = selectors.document_chunks(document=document, limit=min(limit, 500), offset=offset)
        return Response({"count": document.chunk_count if document.status == DocumentStatus.INDEXED else 0,
                         "results": ChunkOutputSerializer(chunks, many=True).data})


class DocumentRetryApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    @extend_schema(request=None, responses={202: DocumentOutputSerializer})
    def post(self, request: Request, document_id: int) -> Response:
        document = services.document_retry(document=selectors.document_get(document_id=document_id),
                                           actor=request.user)
        return _document_response(document, status.HTTP_202_ACCEPTED)


class DocumentReindexApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    @extend_schema(operation_id="document_reindex", request=None, responses={202: DocumentOutputSerializer})
    def post(self, request: Request, document_id: int) -> Response:
        document = services.document_reindex(document=selectors.document_get(document_id=document_id),
                                             actor=request.user)
        return _document_response(document, status.HTTP_202_ACCEPTED)


class DocumentVersionUploadApi(DocumentsApiView):
    required_permission = "knowledge.manage"
    parser_classes = [MultiPartParser]

    class VersionInputSerializer(serializers.Serializer):
        file = serializers.FileField()

    @extend_schema(request={"multipart/form-data": VersionInputSerializer}, responses={202: DocumentOutputSerializer})
    def post(self, request: Request, document_id: int) -> Response:
        document = selectors.document_get(document_id=document_id)
        uploaded = self._one_file(request)
        document = services.document_new_version(document=document, uploaded_file=uploaded, uploaded_by=request.user)
        return _document_response(document, status.HTTP_202_ACCEPTED)


# --- website sources (/api/v1/sources/) -----------------------------------------------------------------------------


class SourceRunOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source_id = serializers.IntegerField()
    kind = serializers.CharField(help_text="crawl (the first one) or sync.")
    status = serializers.CharField(help_text="queued, running, cancelling, cancelled, stopped, completed or failed.")
    trigger = serializers.CharField(help_text="manual, api, command or schedule.")
    note = serializers.SerializerMethodField(help_text="Where the run is and why, in plain words.")
    discovered = serializers.IntegerField(help_text="Page addresses found (sitemaps not counted).")
    fetched = serializers.IntegerField(help_text="Pages the site answered (304 Not Modified included).")
    indexed = serializers.IntegerField(help_text="New or changed pages parsed, embedded and indexed.")
    unchanged = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField(help_text="Not fetched (robots.txt, patterns, depth, max pages, ...).")
    added = serializers.IntegerField()
    changed = serializers.IntegerField()
    removed = serializers.IntegerField(help_text="Pages gone (404/410) twice in a row, removed from the index.")
    pending = serializers.SerializerMethodField(help_text="Addresses still to handle (the persisted frontier).")
    stop_code = serializers.CharField()
    stop_message = serializers.CharField()
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    seconds = serializers.FloatField()

    def get_note(self, run: Any) -> str:
        return selectors.source_run_note(run)

    def get_pending(self, run: Any) -> int:
        return run.pages.filter(state="pending").count()


class SourceOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    kind = serializers.CharField(help_text="site (follow links from the URL) or sitemap.")
    max_pages = serializers.IntegerField()
    max_depth = serializers.IntegerField()
    include = serializers.ListField(child=serializers.CharField())
    exclude = serializers.ListField(child=serializers.CharField())
    schedule = serializers.CharField(help_text="off, daily or weekly.")
    next_sync_at = serializers.DateTimeField(allow_null=True)
    last_synced_at = serializers.DateTimeField(allow_null=True)
    page_count = serializers.SerializerMethodField(help_text="Pages of this site in the knowledge base.")
    last_run = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_page_count(self, source: Any) -> int:
        count = getattr(source, "page_count", None)
        return count if count is not None else source.pages.count()

    def get_last_run(self, source: Any) -> dict[str, Any] | None:
        run = selectors.source_last_run(source=source)
        return SourceRunOutputSerializer(run).data if run is not None else None


class SourceRunPageOutputSerializer(serializers.Serializer):
    url = serializers.CharField()
    depth = serializers.IntegerField()
    state = serializers.CharField(help_text="pending, indexed, unchanged, failed, skipped or removed.")
    outcome = serializers.CharField(help_text="added, changed, unchanged, removed, gone_once or empty.")
    reason_code = serializers.CharField()
    reason = serializers.CharField()
    document_id = serializers.IntegerField(allow_null=True)


class SourceListCreateApi(DocumentsApiView):
    required_permission = {"GET": "knowledge.view", "POST": "knowledge.manage"}
    parser_classes = [JSONParser, FormParser]

    class SourceCreateInputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=services.MAX_URL, help_text="A start page, or a sitemap (sitemap).")
        sitemap = serializers.BooleanField(required=False, default=False)
        max_pages = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
        max_depth = serializers.IntegerField(required=False, min_value=0, max_value=20)
        include = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
        exclude = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
        schedule = serializers.ChoiceField(choices=["off", "daily", "weekly"], required=False)

    @extend_schema(responses=SourceOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = ApiPagination()
        page = paginator.paginate_queryset(selectors.source_list(), request, view=self)
        return paginator.get_paginated_response(SourceOutputSerializer(page, many=True).data)

    @extend_schema(request=SourceCreateInputSerializer, responses={201: SourceOutputSerializer})
    def post(self, request: Request) -> Response:
        from documents import sources

        serializer = self.SourceCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        source = sources.source_create(created_by=request.user, trigger="api", **serializer.validated_data)
        return Response(SourceOutputSerializer(selectors.source_get(source_id=source.pk)).data,
                        status=status.HTTP_201_CREATED)


class SourceDetailApi(DocumentsApiView):
    required_permission = {"GET": "knowledge.view", "PATCH": "knowledge.manage", "DELETE": "knowledge.manage"}
    parser_classes = [JSONParser, FormParser]

    class SourceUpdateInputSerializer(serializers.Serializer):
        max_pages = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
        max_depth = serializers.IntegerField(required=False, min_value=0, max_value=20)
        include = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
        exclude = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50)
        schedule = serializers.ChoiceField(choices=["off", "daily", "weekly"], required=False)

    @extend_schema(responses=SourceOutputSerializer)
    def get(self, request: Request, source_id: int) -> Response:
        return Response(SourceOutputSerializer(selectors.source_get(source_id=source_id)).data)

    @extend_schema(request=SourceUpdateInputSerializer, responses=SourceOutputSerializer)
    def patch(self, request: Request, source_id: int) -> Response:
        from documents import sources

        serializer = self.SourceUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        source = sources.source_update(source=selectors.source_get(source_id=source_id), actor=request.user,
                                       **serializer.validated_data)
        return Response(SourceOutputSerializer(selectors.source_get(source_id=source.pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, source_id: int) -> Response:
        from documents import sources

        sources.source_delete(source=selectors.source_get(source_id=source_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SourceSyncApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    @extend_schema(request=None, responses={202: SourceRunOutputSerializer})
    def post(self, request: Request, source_id: int) -> Response:
        from documents import sources

        run = sources.source_sync(source=selectors.source_get(source_id=source_id), actor=request.user,
                                  trigger="api")
        return Response(SourceRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class SourceRunListApi(DocumentsApiView):
    required_permission = "knowledge.view"

    @extend_schema(responses=SourceRunOutputSerializer(many=True))
    def get(self, request: Request, source_id: int) -> Response:
        paginator = ApiPagination()
        runs = selectors.source_runs(source=selectors.source_get(source_id=source_id))
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(SourceRunOutputSerializer(page, many=True).data)


class SourceRunDetailApi(DocumentsApiView):
    required_permission = "knowledge.view"

    @extend_schema(responses=SourceRunOutputSerializer)
    def get(self, request: Request, source_id: int, run_id: int) -> Response:
        run = selectors.source_run_get(source=selectors.source_get(source_id=source_id), run_id=run_id)
        return Response(SourceRunOutputSerializer(run).data)


class SourceRunPagesApi(DocumentsApiView):
    """The run's report: what happened to every address it found, with the reason for each failure or skip."""

    required_permission = "knowledge.view"

    @extend_schema(parameters=[OpenApiParameter("state", str, required=False,
                                                 enum=["pending", "indexed", "unchanged", "failed", "skipped",
                                                       "removed"])],
                   responses=SourceRunPageOutputSerializer(many=True))
    def get(self, request: Request, source_id: int, run_id: int) -> Response:
        run = selectors.source_run_get(source=selectors.source_get(source_id=source_id), run_id=run_id)
        state = request.query_params.get("state") or None
        if state is not None and state not in ("pending", "indexed", "unchanged", "failed", "skipped", "removed"):
            raise ValidationFailed("Unknown state.", details={"field": "state"})
        paginator = ApiPagination()
        page = paginator.paginate_queryset(selectors.source_run_pages(run=run, state=state), request, view=self)
        return paginator.get_paginated_response(SourceRunPageOutputSerializer(page, many=True).data)


class SourceRunCancelApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    @extend_schema(request=None, responses={202: SourceRunOutputSerializer})
    def post(self, request: Request, source_id: int, run_id: int) -> Response:
        from documents import sources

        run = selectors.source_run_get(source=selectors.source_get(source_id=source_id), run_id=run_id)
        run = sources.source_run_cancel(run=run, actor=request.user)
        return Response(SourceRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class SourceRunResumeApi(DocumentsApiView):
    required_permission = "knowledge.manage"

    @extend_schema(request=None, responses={202: SourceRunOutputSerializer})
    def post(self, request: Request, source_id: int, run_id: int) -> Response:
        from documents import sources

        run = selectors.source_run_get(source=selectors.source_get(source_id=source_id), run_id=run_id)
        run = sources.source_run_resume(run=run, actor=request.user)
        return Response(SourceRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)
