"""/api/v1/webhooks/ — outbound webhook endpoints, their deliveries, redelivery, secret rotation and test events.

Everything needs `settings.manage` (owners and admins; API keys: the write scope). The signing secret is returned once, by the call that creates or rotates it. docs/webhooks.md.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasWorkspacePermission
from analytics import webhooks
from config.pagination import ApiPagination


class HasWebhookAccess(HasWorkspacePermission):
    """settings.manage, and for an API key also what a delivery carries: customers' messages and leads
    (conversations.view, the `read` scope). A `write`-only key would otherwise read conversations through
    webhook payloads (subscribing, or the delivery log) that it may not read directly."""

    def has_permission(self, request: Request, view: Any) -> bool:
        from accounts.authentication import ApiKeyPrincipal
        from accounts.roles import scopes_have_permission
        from config.errors import PermissionDenied

        super().has_permission(request, view)
        if isinstance(request.user, ApiKeyPrincipal) and not scopes_have_permission(
                request.user.api_key.scopes, "conversations.view"):
            raise PermissionDenied("Webhooks carry conversations: this key also needs the read scope.",
                                   details={"permission": "conversations.view"})
        return True


class EndpointOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField()
    description = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    secret_hint = serializers.CharField(help_text="The last characters of the signing secret.")
    secret_rotated_at = serializers.DateTimeField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    failing_since = serializers.DateTimeField(allow_null=True)
    disabled_at = serializers.DateTimeField(allow_null=True)
    disabled_reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class EndpointWithSecretSerializer(EndpointOutputSerializer):
    secret = serializers.CharField(help_text="Shown once: verify each delivery's Webhook-Signature with it.")


class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.UUIDField()
    event_type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    response_status = serializers.IntegerField(allow_null=True)
    response_excerpt = serializers.CharField()
    latency_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    retry_delays = serializers.ListField(child=serializers.IntegerField())
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    redelivery_of = serializers.IntegerField(source="redelivery_of_id", allow_null=True)
    is_test = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    payload = serializers.JSONField()


_EVENTS_HELP = f"Any of {sorted(webhooks.EVENT_TYPES)}."


class WebhookListCreateApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = {"GET": "settings.manage", "POST": "settings.manage"}

    class InputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=2000, help_text="http(s); private networks are refused.")
        events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(webhooks.EVENT_TYPES)), min_length=1,
                                       max_length=20,
                                       help_text=_EVENTS_HELP)
        description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")

    @extend_schema(responses=EndpointOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(EndpointOutputSerializer(webhooks.webhook_endpoint_list(), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: EndpointWithSecretSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_endpoint_create(actor=request.user, **serializer.validated_data)
        return Response({**EndpointOutputSerializer(endpoint).data, "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookDetailApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = {"GET": "settings.manage", "PATCH": "settings.manage", "DELETE": "settings.manage"}

    class InputSerializer(serializers.Serializer):
        url = serializers.CharField(max_length=2000, required=False)
        events = serializers.ListField(child=serializers.ChoiceField(choices=sorted(webhooks.EVENT_TYPES)), min_length=1,
                                       max_length=20,
                                       required=False, help_text=_EVENTS_HELP)
        description = serializers.CharField(max_length=200, required=False, allow_blank=True)
        is_active = serializers.BooleanField(required=False, help_text="Switch the endpoint on again (or off).")

    @extend_schema(responses=EndpointOutputSerializer)
    def get(self, request: Request, webhook_id: int) -> Response:
        return Response(EndpointOutputSerializer(webhooks.webhook_endpoint_get(endpoint_id=webhook_id)).data)

    @extend_schema(request=InputSerializer, responses=EndpointOutputSerializer)
    def patch(self, request: Request, webhook_id: int) -> Response:
        endpoint = webhooks.webhook_endpoint_get(endpoint_id=webhook_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_update(endpoint=endpoint, actor=request.user, **serializer.validated_data)
        return Response(EndpointOutputSerializer(endpoint).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, webhook_id: int) -> Response:
        webhooks.webhook_endpoint_delete(endpoint=webhooks.webhook_endpoint_get(endpoint_id=webhook_id),
                                         actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = "settings.manage"

    @extend_schema(request=None, responses=EndpointWithSecretSerializer)
    def post(self, request: Request, webhook_id: int) -> Response:
        endpoint, secret = webhooks.webhook_secret_rotate(
            endpoint=webhooks.webhook_endpoint_get(endpoint_id=webhook_id), actor=request.user)
        return Response({**EndpointOutputSerializer(endpoint).data, "secret": secret})


class WebhookTestApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = "settings.manage"

    @extend_schema(request=None, responses={202: DeliveryOutputSerializer})
    def post(self, request: Request, webhook_id: int) -> Response:
        delivery = webhooks.webhook_test_send(endpoint=webhooks.webhook_endpoint_get(endpoint_id=webhook_id))
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = "settings.manage"

    @extend_schema(responses=DeliveryOutputSerializer(many=True))
    def get(self, request: Request, webhook_id: int) -> Any:
        endpoint = webhooks.webhook_endpoint_get(endpoint_id=webhook_id)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(webhooks.webhook_delivery_list(endpoint=endpoint), request, view=self)
        return paginator.get_paginated_response(DeliveryOutputSerializer(page, many=True).data)


class WebhookDeliveryDetailApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = "settings.manage"

    @extend_schema(responses=DeliveryOutputSerializer)
    def get(self, request: Request, webhook_id: int, delivery_id: int) -> Response:
        endpoint = webhooks.webhook_endpoint_get(endpoint_id=webhook_id)
        return Response(DeliveryOutputSerializer(
            webhooks.webhook_delivery_get(endpoint=endpoint, delivery_id=delivery_id)).data)


class WebhookRedeliverApi(APIView):
    permission_classes = [HasWebhookAccess]
    required_permission = "settings.manage"

    @extend_schema(request=None, responses={202: DeliveryOutputSerializer})
    def post(self, request: Request, webhook_id: int, delivery_id: int) -> Response:
        endpoint = webhooks.webhook_endpoint_get(endpoint_id=webhook_id)
        delivery = webhooks.webhook_redeliver(
            delivery=webhooks.webhook_delivery_get(endpoint=endpoint, delivery_id=delivery_id))
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
