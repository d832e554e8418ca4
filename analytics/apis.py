"""REST endpoints of analytics (/api/v1/analytics/...): the dashboard's figures, from the same selectors.

Every endpoint takes the same filters (`start`, `end`, `tz`, `interval`, `embed`; analytics.selectors.
analytics_filters_parse) and needs `analytics.view` (all roles; API keys with the `read` scope). Bad filters are a
400 in the one error shape with a stable code (analytics.errors.AnalyticsErrorCode)."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors
from analytics.selectors import AnalyticsFilters
from config.errors import ValidationFailed

FILTER_PARAMETERS = [
    OpenApiParameter("start", str, description="ISO date (local midnight) or date-time; default: 30 days before end."),
    OpenApiParameter("end", str, description="ISO date (included) or date-time (excluded); default: now."),
    OpenApiParameter("tz", str, description="IANA time zone of the buckets and dates; default UTC."),
    OpenApiParameter("interval", str, enum=list(selectors.INTERVALS), description="Bucket size; default day."),
    OpenApiParameter("embed", int, description="Only this widget's events."),
]
LIMIT_PARAMETER = OpenApiParameter("limit", int, description="Rows at most.")


def _limit(request: Request, *, default: int, maximum: int) -> int:
    raw = request.query_params.get("limit")
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
        if not 1 <= value <= maximum:
            raise ValueError
    except ValueError:
        raise ValidationFailed(f"limit is a whole number from 1 to {maximum}.",
                               details={"fields": {"limit": [f"1 to {maximum}."]}}) from None
    return value


class SummaryOutputSerializer(serializers.Serializer):
    conversations = serializers.IntegerField()
    questions = serializers.IntegerField()
    answered = serializers.IntegerField(help_text="Answers given, low-confidence ones included.")
    unanswered = serializers.IntegerField(help_text="Questions the assistant declined.")
    low_confidence = serializers.IntegerField()
    handoffs = serializers.IntegerField()
    resolution_rate = serializers.FloatField(allow_null=True)
    first_token_p50_ms = serializers.IntegerField(allow_null=True)
    first_token_p95_ms = serializers.IntegerField(allow_null=True)
    feedback_up = serializers.IntegerField()
    feedback_down = serializers.IntegerField()
    satisfaction = serializers.FloatField(allow_null=True)
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    cost = serializers.CharField()


class QueriesOverTimeOutputSerializer(serializers.Serializer):
    bucket = serializers.CharField(help_text="Local start of the bucket, ISO 8601 with its UTC offset.")
    questions = serializers.IntegerField()
    answered = serializers.IntegerField()
    unanswered = serializers.IntegerField()
    handoffs = serializers.IntegerField()


class TopQueryOutputSerializer(serializers.Serializer):
    cluster_id = serializers.IntegerField()
    question = serializers.CharField()
    count = serializers.IntegerField()
    answered = serializers.IntegerField()
    unanswered = serializers.IntegerField()


class UnansweredOutputSerializer(serializers.Serializer):
    question = serializers.CharField()
    count = serializers.IntegerField()
    last_asked_at = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["declined", "low_confidence"])
    conversation_id = serializers.CharField(allow_null=True)


class DocumentUsedSerializer(serializers.Serializer):
    document_id = serializers.IntegerField()
    title = serializers.CharField(allow_null=True)
    citations = serializers.IntegerField()


class DocumentNeverCitedSerializer(serializers.Serializer):
    document_id = serializers.IntegerField()
    title = serializers.CharField()


class DocumentsOutputSerializer(serializers.Serializer):
    used = DocumentUsedSerializer(many=True)
    never_cited = DocumentNeverCitedSerializer(many=True)


class EmbedUsageOutputSerializer(serializers.Serializer):
    embed_id = serializers.IntegerField()
    embed_name = serializers.CharField(allow_null=True)
    origin = serializers.CharField()
    opens = serializers.IntegerField()
    conversations = serializers.IntegerField()
    questions = serializers.IntegerField()


class LatencyBucketSerializer(serializers.Serializer):
    bucket = serializers.CharField()
    first_token_p50_ms = serializers.IntegerField(allow_null=True)
    first_token_p95_ms = serializers.IntegerField(allow_null=True)
    total_p50_ms = serializers.IntegerField(allow_null=True)
    total_p95_ms = serializers.IntegerField(allow_null=True)


class QualityOutputSerializer(serializers.Serializer):
    feedback_up = serializers.IntegerField()
    feedback_down = serializers.IntegerField()
    ratio = serializers.FloatField(allow_null=True)
    latency_over_time = LatencyBucketSerializer(many=True)


class HandoffOutputSerializer(serializers.Serializer):
    reason = serializers.CharField()
    count = serializers.IntegerField()


class AnalyticsApi(APIView):
    """One figure of the dashboard: parse the filters, call one selector."""

    required_permission = "analytics.view"

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        raise NotImplementedError

    def get(self, request: Request) -> Response:
        filters = selectors.analytics_filters_parse(request.query_params)
        return Response(self.figure(request, filters))


class SummaryApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=SummaryOutputSerializer)
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_summary(filters)


class QueriesOverTimeApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=QueriesOverTimeOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_queries_over_time(filters)


class TopQueriesApi(AnalyticsApi):
    @extend_schema(parameters=[*FILTER_PARAMETERS, LIMIT_PARAMETER], responses=TopQueryOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_top_queries(filters, limit=_limit(request, default=20, maximum=200))


class UnansweredApi(AnalyticsApi):
    @extend_schema(parameters=[*FILTER_PARAMETERS, LIMIT_PARAMETER], responses=UnansweredOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_unanswered(filters, limit=_limit(request, default=100, maximum=500))


class DocumentsApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=DocumentsOutputSerializer)
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_documents(filters)


class EmbedsApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=EmbedUsageOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_embeds(filters)


class QualityApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=QualityOutputSerializer)
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_quality(filters)


class HandoffsApi(AnalyticsApi):
    @extend_schema(parameters=FILTER_PARAMETERS, responses=HandoffOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return super().get(request)

    def figure(self, request: Request, filters: AnalyticsFilters) -> Any:
        return selectors.analytics_handoffs(filters)
