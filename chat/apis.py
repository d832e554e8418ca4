"""REST endpoints of conversations (/api/v1/conversations/): the same conversations as the WebSocket, with a
non-streaming message endpoint for integrators without WebSockets."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import protocol, selectors, services
from chat.models import Channel, Conversation, ConversationStatus
from config.errors import NotFound


class MessageOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField()
    content = serializers.CharField()
    client_id = serializers.CharField(source="client_message_id", allow_blank=True)
    reply_to = serializers.IntegerField(source="reply_to_id", allow_null=True)
    seq = serializers.IntegerField(allow_null=True, help_text="The event seq at which the message was sent.")
    created_at = serializers.DateTimeField()
    citations = serializers.ListField(child=serializers.DictField())
    answered = serializers.BooleanField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)
    provider = serializers.CharField()
    model = serializers.CharField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=12, decimal_places=6, coerce_to_string=False)
    latency_first_token_ms = serializers.IntegerField(allow_null=True)
    latency_total_ms = serializers.IntegerField(allow_null=True)
    timings_ms = serializers.DictField()
    feedback = serializers.IntegerField()
    feedback_comment = serializers.CharField()


class ConversationOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    status = serializers.CharField()
    channel = serializers.CharField()
    title = serializers.CharField()
    visitor_id = serializers.CharField()
    visitor_name = serializers.CharField()
    visitor_email = serializers.CharField()
    handoff_reason = serializers.CharField()
    last_seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    last_message_at = serializers.DateTimeField(allow_null=True)
    message_count = serializers.IntegerField(required=False, default=None)


class ConversationDetailOutputSerializer(ConversationOutputSerializer):
    metadata = serializers.DictField()
    messages = MessageOutputSerializer(many=True, help_text="Oldest first.")


def _conversation(public_id: Any) -> Conversation:
    conversation = selectors.conversation_get(public_id=public_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def _detail(conversation: Conversation) -> dict[str, Any]:
    return ConversationDetailOutputSerializer(conversation).data


class ConversationListCreateApi(APIView):
    required_permission = {"GET": "conversations.view", "POST": "conversations.reply"}

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ConversationStatus.values, required=False)
        channel = serializers.ChoiceField(choices=Channel.values, required=False)
        q = serializers.CharField(required=False, max_length=200)
        visitor_id = serializers.CharField(required=False, max_length=64)

    class ConversationCreateInputSerializer(serializers.Serializer):
        channel = serializers.ChoiceField(choices=Channel.values, default=Channel.API)
        title = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
        visitor_id = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
        visitor_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
        visitor_email = serializers.EmailField(required=False, default="", allow_blank=True)
        metadata = serializers.DictField(required=False, default=dict)

    @extend_schema(
        parameters=[FilterSerializer, OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses=ConversationOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        conversations = selectors.conversation_list(
            status=data.get("status"), channel=data.get("channel"), search=data.get("q"),
            visitor_id=data.get("visitor_id"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(conversations, request, view=self)
        return paginator.get_paginated_response(ConversationOutputSerializer(page, many=True).data)

    @extend_schema(request=ConversationCreateInputSerializer, responses={201: ConversationOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.ConversationCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = services.conversation_start(created_by=request.user, **serializer.validated_data)
        conversation.message_count = 0  # type: ignore[attr-defined]
        return Response(ConversationOutputSerializer(conversation).data, status=status.HTTP_201_CREATED)


class ConversationDetailApi(APIView):
    required_permission = "conversations.view"

    @extend_schema(responses=ConversationDetailOutputSerializer)
    def get(self, request: Request, conversation_id: Any) -> Response:
        return Response(_detail(_conversation(conversation_id)))


class ConversationMessageApi(APIView):
    required_permission = {"GET": "conversations.view", "POST": "conversations.reply"}

    class MessagePostInputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)
        client_id = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)

    class AnswerOutputSerializer(serializers.Serializer):
        message = MessageOutputSerializer()
        answer = MessageOutputSerializer(allow_null=True)
        duplicate = serializers.BooleanField()

    @extend_schema(responses=MessageOutputSerializer(many=True))
    def get(self, request: Request, conversation_id: Any) -> Response:
        conversation = _conversation(conversation_id)
        return Response(MessageOutputSerializer(selectors.message_list(conversation=conversation), many=True).data)

    @extend_schema(
        request=MessagePostInputSerializer, responses={201: AnswerOutputSerializer, 200: AnswerOutputSerializer},
        description="Post a customer message and wait for the whole answer (no streaming). `client_id` makes the "
        "call idempotent: a retry returns the first message and its answer (200). Sockets watching the "
        "conversation see the answer stream as usual.",
    )
    def post(self, request: Request, conversation_id: Any) -> Response:
        conversation = _conversation(conversation_id)
        serializer = self.MessagePostInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        text = protocol.message_text_clean(data["text"], max_chars=protocol.ProtocolLimits.from_settings().max_message_chars)
        client_id = protocol.client_id_clean(data["client_id"]) if data["client_id"] else ""
        result = services.conversation_message_answer(
            conversation=conversation, text=text, client_message_id=client_id,
            author=request.user if getattr(request.user, "pk", None) else None,
        )
        if result.error is not None:
            result.error.details = {**result.error.details, "message_id": result.message.pk}
            raise result.error
        body = {"message": result.message, "answer": result.answer, "duplicate": not result.created}
        return Response(
            self.AnswerOutputSerializer(body).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class MessageFeedbackApi(APIView):
    required_permission = "conversations.reply"

    class FeedbackInputSerializer(serializers.Serializer):
        value = serializers.ChoiceField(choices=[1, -1, 0])
        comment = serializers.CharField(max_length=2000, required=False, default="", allow_blank=True)

    @extend_schema(request=FeedbackInputSerializer, responses=MessageOutputSerializer)
    def post(self, request: Request, conversation_id: Any, message_id: int) -> Response:
        conversation = _conversation(conversation_id)
        serializer = self.FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = services.message_feedback_set(
            conversation=conversation, message_id=message_id, value=int(serializer.validated_data["value"]),
            comment=serializer.validated_data["comment"],
        )
        return Response(MessageOutputSerializer(message).data)


class ConversationRequestHumanApi(APIView):
    required_permission = "conversations.reply"

    @extend_schema(request=None, responses=ConversationOutputSerializer)
    def post(self, request: Request, conversation_id: Any) -> Response:
        conversation = services.conversation_request_human(conversation=_conversation(conversation_id), reason="asked")
        return Response(ConversationOutputSerializer(conversation).data)
