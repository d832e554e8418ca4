"""REST endpoints of curated answers (/api/v1/curated-answers/...): CRUD and CSV import/export; thin, one service or
selector per operation (documents/curated.py). Reading needs knowledge.view, writing knowledge.manage (owner and
admin, or an API key with the write scope): a curated answer is served to every customer, like the knowledge base."""
from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, ErrorCode
from config.pagination import ApiPagination
from config.parsers import StrictFormParser, StrictJSONParser, StrictMultiPartParser
from documents import curated


class CuratedAnswerOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    question = serializers.CharField()
    examples = serializers.ListField(child=serializers.CharField(), help_text="Further phrasings of the question.")
    answer = serializers.CharField()
    hits = serializers.IntegerField(help_text="Times it was served.")
    last_hit_at = serializers.DateTimeField(allow_null=True)
    source_message_id = serializers.IntegerField(allow_null=True, help_text="The assistant reply it corrects.")
    created_by = serializers.SerializerMethodField()
    updated_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_created_by(self, obj: Any) -> str | None:
        return obj.created_by.email if obj.created_by_id else None

    def get_updated_by(self, obj: Any) -> str | None:
        return obj.updated_by.email if obj.updated_by_id else None


def _out(obj: Any, code: int = status.HTTP_200_OK) -> Response:
    return Response(CuratedAnswerOutputSerializer(obj).data, status=code)


class CuratedAnswerListCreateApi(APIView):
    required_permission = {"GET": "knowledge.view", "POST": "knowledge.manage"}
    parser_classes = [StrictJSONParser, StrictFormParser]

    class CuratedAnswerInputSerializer(serializers.Serializer):
        question = serializers.CharField(max_length=curated.MAX_QUESTION_CHARS)
        answer = serializers.CharField(max_length=curated.MAX_ANSWER_CHARS)
        examples = serializers.ListField(child=serializers.CharField(max_length=curated.MAX_QUESTION_CHARS),
                                         required=False, max_length=curated.MAX_EXAMPLES)
        source_message_id = serializers.IntegerField(required=False, allow_null=True, min_value=1)

    @extend_schema(parameters=[OpenApiParameter("q", str)], responses=CuratedAnswerOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        search = str(request.query_params.get("q") or "").strip()[:200] or None
        paginator = ApiPagination()
        page = paginator.paginate_queryset(curated.curated_answer_list(search=search), request, view=self)
        return paginator.get_paginated_response(CuratedAnswerOutputSerializer(page, many=True).data)

    @extend_schema(request=CuratedAnswerInputSerializer, responses={201: CuratedAnswerOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.CuratedAnswerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        obj = curated.curated_answer_create(actor=request.user, **serializer.validated_data)
        return _out(obj, status.HTTP_201_CREATED)


class CuratedAnswerDetailApi(APIView):
    required_permission = {"GET": "knowledge.view", "PATCH": "knowledge.manage", "DELETE": "knowledge.manage"}
    parser_classes = [StrictJSONParser, StrictFormParser]

    class CuratedAnswerUpdateInputSerializer(serializers.Serializer):
        question = serializers.CharField(max_length=curated.MAX_QUESTION_CHARS, required=False)
        answer = serializers.CharField(max_length=curated.MAX_ANSWER_CHARS, required=False)
        examples = serializers.ListField(child=serializers.CharField(max_length=curated.MAX_QUESTION_CHARS),
                                         required=False, max_length=curated.MAX_EXAMPLES)

    @extend_schema(responses=CuratedAnswerOutputSerializer)
    def get(self, request: Request, curated_answer_id: int) -> Response:
        return _out(curated.curated_answer_get(curated_answer_id=curated_answer_id))

    @extend_schema(request=CuratedAnswerUpdateInputSerializer, responses=CuratedAnswerOutputSerializer)
    def patch(self, request: Request, curated_answer_id: int) -> Response:
        obj = curated.curated_answer_get(curated_answer_id=curated_answer_id)
        serializer = self.CuratedAnswerUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _out(curated.curated_answer_update(curated=obj, actor=request.user, **serializer.validated_data))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, curated_answer_id: int) -> Response:
        obj = curated.curated_answer_get(curated_answer_id=curated_answer_id)
        curated.curated_answer_delete(curated=obj, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class CuratedAnswerExportApi(APIView):
    required_permission = "knowledge.view"

    @extend_schema(responses={(200, "text/csv"): OpenApiResponse(response=OpenApiTypes.STR)})
    def get(self, request: Request) -> HttpResponse:
        response = HttpResponse(curated.curated_answers_csv_export(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="curated-answers.csv"'
        return response


class CuratedAnswerImportApi(APIView):
    required_permission = "knowledge.manage"
    parser_classes = [StrictMultiPartParser]

    class CuratedAnswerImportInputSerializer(serializers.Serializer):
        csv = serializers.FileField(help_text="UTF-8 CSV with a header row: question, answer[, examples] (examples "
                                              "separated by “|”). A question already stored updates that answer.")

    class CuratedAnswerImportOutputSerializer(serializers.Serializer):
        created = serializers.IntegerField()
        updated = serializers.IntegerField()

    @extend_schema(request={"multipart/form-data": CuratedAnswerImportInputSerializer}, responses={200: CuratedAnswerImportOutputSerializer})
    def post(self, request: Request) -> Response:
        files = request.FILES.getlist("csv")
        if len(files) != 1:
            raise ApplicationError("Attach one CSV file as multipart form field “csv”.", code=ErrorCode.FILE_REQUIRED,
                                   details={"field": "csv"})
        upload = files[0]
        if upload.size is not None and upload.size > curated.MAX_CSV_BYTES:
            raise ApplicationError("The CSV file is too large.", code=ErrorCode.FILE_TOO_LARGE, status_code=413,
                                   details={"max_bytes": curated.MAX_CSV_BYTES})
        report = curated.curated_answers_csv_import(data=upload.read(curated.MAX_CSV_BYTES + 1), actor=request.user)
        return Response({"created": report.created, "updated": report.updated})
