"""REST endpoints of plans, usage and the subscription (tenants.billing; docs/billing.md)."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ValidationFailed
from config.pagination import ApiPagination
from tenants import billing


class UsageApi(APIView):
    """This period's usage per meter, the credits, the plan and the invoice preview (plan price plus overage),
    computed from the credit ledger; with `?month=YYYY-MM`, the billing period that started in that month."""

    required_permission = "billing.view"

    @extend_schema(
        parameters=[OpenApiParameter("month", OpenApiTypes.STR, description="YYYY-MM: the period that started then")],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        workspace = request._request.tenant
        summary = billing.usage_summary(workspace=workspace, month=request.query_params.get("month") or None)
        recent = billing.ledger_history(workspace=workspace)[:20]
        summary["ledger"] = [billing.ledger_entry_as_dict(entry) for entry in recent]
        return Response(summary)


class LedgerEntryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    period_start = serializers.DateTimeField()
    kind = serializers.CharField()
    amount = serializers.IntegerField()
    charge = serializers.DecimalField(max_digits=14, decimal_places=4)
    plan = serializers.CharField()
    reason = serializers.CharField()
    reference = serializers.CharField()
    actor = serializers.CharField(source="actor_label")


class LedgerApi(APIView):
    """The credit ledger, newest first (limit/offset pagination); `?period=current` for this period only."""

    required_permission = "billing.view"

    @extend_schema(
        parameters=[OpenApiParameter("period", OpenApiTypes.STR, enum=["current"])],
        responses=LedgerEntryOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        workspace = request._request.tenant
        period_start = None
        if request.query_params.get("period") == "current":
            period_start = billing.subscription_get(workspace=workspace).period_start
        entries = billing.ledger_history(workspace=workspace, period_start=period_start)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(LedgerEntryOutputSerializer(page, many=True).data)


class PlanListApi(APIView):
    """The plans on offer, with their limits and prices."""

    required_permission = "billing.view"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response([billing.plan_as_dict(plan) for plan in billing.plan_list()])


class SubscriptionApi(APIView):
    """The workspace's plan and billing period; PATCH changes the plan (upgrades now, downgrades at period end)
    or the overage switch. Owners only (billing.manage); API keys can't change billing."""

    required_permission = {"GET": "billing.view", "PATCH": "billing.manage"}

    class SubscriptionInputSerializer(serializers.Serializer):
        plan = serializers.SlugField(max_length=40, required=False)
        overage_enabled = serializers.BooleanField(required=False)

    def _state(self, request: Request) -> dict:
        workspace = request._request.tenant
        subscription = billing.subscription_get(workspace=workspace)
        return {
            "plan": billing.plan_as_dict(billing.plan_for_workspace(workspace=workspace)),
            "scheduled_plan": subscription.scheduled_plan_id,
            "overage_enabled": subscription.overage_enabled,
            "period": {"start": subscription.period_start.isoformat(), "end": subscription.period_end.isoformat()},
            "anchor": subscription.anchor.isoformat(),
            "payment_gateway": billing.billing_gateway().name,
        }

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(self._state(request))

    @extend_schema(request=SubscriptionInputSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request) -> Response:
        serializer = self.SubscriptionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not data:
            raise ValidationFailed("Give `plan` or `overage_enabled`.", details={"fields": ["plan", "overage_enabled"]})
        workspace = request._request.tenant
        change = None
        if "plan" in data:
            change = billing.plan_change(workspace=workspace, code=data["plan"], actor=request.user)
        if "overage_enabled" in data:
            billing.overage_set(workspace=workspace, enabled=data["overage_enabled"], actor=request.user)
        body = self._state(request)
        if change is not None:
            body["change"] = {
                "kind": change.kind, "from": change.from_plan, "to": change.to_plan,
                "effective_at": change.effective_at.isoformat(), "credits_granted": change.credits_granted,
                "charge": str(change.charge),
            }
        return Response(body)
