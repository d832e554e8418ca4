"""REST endpoints of conversations (/api/v1/conversations/): the same conversations as the WebSocket, with a
non-streaming message endpoint for integrators without WebSockets."""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from accounts.authentication import ApiKeyPrincipal
from accounts.roles import role_has_permission, scopes_have_permission
from chat import protocol, selectors, services
from chat.models import Channel, Conversation, ConversationStatus, Lead
from config.errors import ErrorCode, NotFound, PermissionDenied
from config.pagination import ApiPagination


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
    author_name = serializers.SerializerMethodField(help_text="The person who wrote an agent message, note or event.")

    def get_author_name(self, message: Any) -> str | None:
        if not message.author_id or message.role not in ("agent", "system", "note"):
            return None
        return message.author.display_name if message.author is not None else None


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


class LeadOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    conversation_id = serializers.UUIDField(source="conversation.public_id")
    embed_id = serializers.IntegerField(allow_null=True)
    stage = serializers.CharField(help_text="before_chat or handoff: when the form was shown.")
    name = serializers.CharField()
    email = serializers.CharField()
    phone = serializers.CharField()
    custom_label = serializers.CharField()
    custom_value = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationLeadSerializer(serializers.Serializer):
    name = serializers.CharField()
    email = serializers.CharField()
    phone = serializers.CharField()
    custom_label = serializers.CharField()
    custom_value = serializers.CharField()
    stage = serializers.CharField()
    created_at = serializers.DateTimeField()


class ConversationDetailOutputSerializer(ConversationOutputSerializer):
    metadata = serializers.DictField()
    lead = serializers.SerializerMethodField(help_text="What the visitor entered in the widget's lead form, or null.")

    @extend_schema_field(ConversationLeadSerializer(allow_null=True))
    def get_lead(self, conversation: Conversation) -> dict[str, Any] | None:
        lead = Lead.objects.filter(conversation=conversation).first()
        return ConversationLeadSerializer(lead).data if lead is not None else None
    messages = MessageOutputSerializer(
        many=True, source="visible_messages",
        help_text="Oldest first; internal notes only for people who handle conversations.")


def _conversation(public_id: Any) -> Conversation:
    conversation = selectors.conversation_get(public_id=public_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def _may_read_notes(request: Request) -> bool:
    """Internal notes are for the people who handle conversations (conversations.handle): not viewers, and no
    API-key scope grants it."""
    user = request.user
    if isinstance(user, ApiKeyPrincipal):
        return scopes_have_permission(user.api_key.scopes, "conversations.handle")
    return role_has_permission(getattr(request._request, "role", None), "conversations.handle")


def _detail(conversation: Conversation, *, include_notes: bool) -> dict[str, Any]:
    conversation.visible_messages = selectors.message_list(  # type: ignore[attr-defined]
        conversation=conversation, include_notes=include_notes)
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
        paginator = ApiPagination()
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
        return Response(_detail(_conversation(conversation_id), include_notes=_may_read_notes(request)))


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
        messages = selectors.message_list(conversation=conversation, include_notes=_may_read_notes(request))
        return Response(MessageOutputSerializer(messages, many=True).data)

    @extend_schema(
        request=MessagePostInputSerializer, responses={201: AnswerOutputSerializer, 200: AnswerOutputSerializer},
        description="Post a customer message and wait for the whole answer (no streaming). `client_id` makes the "
        "call idempotent: a retry returns the first message and its answer (200). Sockets watching the "
        "conversation see the answer stream as usual.",
    )
    def post(self, request: Request, conversation_id: Any) -> Response:
        conversation = _conversation(conversation_id)
        if conversation.channel == Channel.WIDGET:
            raise PermissionDenied(
                "Only the visitor writes as the customer of a widget conversation. Reply as an agent: join it, then "
                "post to its agent-messages endpoint.", code=ErrorCode.CUSTOMER_ONLY,
            )
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


# --- human handoff (issue #6; docs/handoff.md) ------------------------------------------------------------------
class AgentBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class InboxConversationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    channel = serializers.CharField()
    title = serializers.CharField()
    visitor_name = serializers.CharField()
    visitor_email = serializers.CharField()
    handoff_reason = serializers.CharField(allow_null=True)
    assigned_agent = AgentBriefSerializer(allow_null=True)
    unread = serializers.IntegerField()
    last_message = serializers.DictField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)
    handoff_at = serializers.DateTimeField(allow_null=True)


class HandoffConversationOutputSerializer(ConversationOutputSerializer):
    assigned_agent_id = serializers.IntegerField(allow_null=True)
    agent_unread = serializers.IntegerField()
    closed_at = serializers.DateTimeField(allow_null=True)


def _agent_user(request: Request) -> Any:
    return request.user if getattr(request.user, "pk", None) else None


class InboxApi(APIView):
    """The agents' inbox: one tab of conversations, with every tab's counts."""

    required_permission = "conversations.handle"

    class FilterSerializer(serializers.Serializer):
        tab = serializers.ChoiceField(choices=selectors.INBOX_TABS, default="waiting")
        q = serializers.CharField(required=False, max_length=200)
        channel = serializers.ChoiceField(choices=Channel.values, required=False)
        reason = serializers.CharField(required=False, max_length=40)
        unread = serializers.BooleanField(required=False, default=False)
        limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=200)

    class InboxOutputSerializer(serializers.Serializer):
        tab = serializers.CharField()
        results = InboxConversationSerializer(many=True)
        counts = serializers.DictField(child=serializers.DictField(child=serializers.IntegerField()))
        agents_online = serializers.IntegerField()

    @extend_schema(parameters=[FilterSerializer], responses=InboxOutputSerializer)
    def get(self, request: Request) -> Response:
        from chat import handoff, inbox

        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        user_id = getattr(request.user, "pk", None) or 0
        conversations = selectors.inbox_list(
            tab=data["tab"], user_id=user_id, search=data.get("q"), channel=data.get("channel"),
            reason=data.get("reason"), unread_only=data["unread"],
        )[: data["limit"]]
        body = {
            "tab": data["tab"], "results": [inbox.conversation_summary(c) for c in conversations],
            "counts": selectors.inbox_counts(user_id=user_id),
            "agents_online": handoff.handoff_availability()["agents_online"],
        }
        return Response(self.InboxOutputSerializer(body).data)


class ConversationJoinApi(APIView):
    required_permission = "conversations.handle"

    @extend_schema(request=None, responses=HandoffConversationOutputSerializer,
                   description="Take the conversation. 409 `conversation_taken` (with `details.agent`) when another "
                   "agent holds it.")
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = handoff.conversation_join(conversation=_conversation(conversation_id), agent=_agent_user(request))
        return Response(HandoffConversationOutputSerializer(conversation).data)


class ConversationAgentMessageApi(APIView):
    required_permission = "conversations.handle"

    class AgentMessageInputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=20000)
        client_id = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)

    @extend_schema(request=AgentMessageInputSerializer, responses={201: MessageOutputSerializer, 200: MessageOutputSerializer},
                   description="Reply as the agent holding the conversation (join first: 409 `not_assigned`).")
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = _conversation(conversation_id)
        serializer = self.AgentMessageInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        text = protocol.message_text_clean(data["text"], max_chars=protocol.ProtocolLimits.from_settings().max_message_chars)
        client_id = protocol.client_id_clean(data["client_id"]) if data["client_id"] else ""
        message, created = handoff.agent_message_post(
            conversation=conversation, agent=_agent_user(request), text=text, client_message_id=client_id,
        )
        return Response(MessageOutputSerializer(message).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ConversationNoteApi(APIView):
    """Internal notes: staff only, never shown to the customer."""

    required_permission = "conversations.handle"

    class NoteInputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True, max_length=20000)

    @extend_schema(responses=MessageOutputSerializer(many=True))
    def get(self, request: Request, conversation_id: Any) -> Response:
        conversation = _conversation(conversation_id)
        notes = selectors.message_list(conversation=conversation).filter(role="note")
        return Response(MessageOutputSerializer(notes, many=True).data)

    @extend_schema(request=NoteInputSerializer, responses={201: MessageOutputSerializer})
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = _conversation(conversation_id)
        serializer = self.NoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        note = handoff.internal_note_add(conversation=conversation, author=_agent_user(request),
                                         text=serializer.validated_data["text"])
        return Response(MessageOutputSerializer(note).data, status=status.HTTP_201_CREATED)


class ConversationHandBackApi(APIView):
    required_permission = "conversations.handle"

    @extend_schema(request=None, responses=HandoffConversationOutputSerializer)
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = handoff.conversation_hand_back(conversation=_conversation(conversation_id),
                                                      agent=_agent_user(request))
        return Response(HandoffConversationOutputSerializer(conversation).data)


class ConversationAssignApi(APIView):
    required_permission = "conversations.handle"

    class AssignInputSerializer(serializers.Serializer):
        agent_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)

    @extend_schema(request=AssignInputSerializer, responses=HandoffConversationOutputSerializer)
    def post(self, request: Request, conversation_id: Any) -> Response:
        from accounts.models import User
        from chat import handoff

        conversation = _conversation(conversation_id)
        serializer = self.AssignInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = User.objects.filter(pk=serializer.validated_data["agent_id"], is_active=True).first()
        conversation = handoff.conversation_assign(conversation=conversation, agent=agent,
                                                   assigned_by=_agent_user(request))
        return Response(HandoffConversationOutputSerializer(conversation).data)


class ConversationCloseApi(APIView):
    required_permission = "conversations.handle"

    class CloseInputSerializer(serializers.Serializer):
        send_transcript = serializers.BooleanField(required=False, default=False)

    @extend_schema(request=CloseInputSerializer, responses=HandoffConversationOutputSerializer)
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = _conversation(conversation_id)
        serializer = self.CloseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = handoff.conversation_close(
            conversation=conversation, closed_by=_agent_user(request),
            send_transcript=serializer.validated_data["send_transcript"],
        )
        return Response(HandoffConversationOutputSerializer(conversation).data)


class ConversationReadApi(APIView):
    required_permission = "conversations.handle"

    @extend_schema(request=None, responses=HandoffConversationOutputSerializer)
    def post(self, request: Request, conversation_id: Any) -> Response:
        from chat import handoff

        conversation = handoff.conversation_mark_read(conversation=_conversation(conversation_id))
        return Response(HandoffConversationOutputSerializer(conversation).data)


class OfficeHoursApi(APIView):
    required_permission = {"GET": "conversations.view", "PUT": "settings.manage"}

    class OfficeHoursSerializer(serializers.Serializer):
        enabled = serializers.BooleanField()
        timezone = serializers.CharField(max_length=64)
        weekly_hours = serializers.DictField(child=serializers.ListField(
            child=serializers.ListField(child=serializers.CharField(max_length=5), min_length=2, max_length=2)))
        # Staff notifications (docs/handoff.md "Staff notifications"); optional on PUT: unchanged when left out.
        notify_agents = serializers.BooleanField(required=False)
        notify_after_seconds = serializers.IntegerField(required=False, min_value=0, max_value=1800)
        daily_digest = serializers.BooleanField(required=False)

    @staticmethod
    def _body(hours: Any) -> dict[str, Any]:
        from chat.models import OfficeHours

        hours = hours or OfficeHours()  # the defaults of a workspace that never saved any
        return {"enabled": hours.enabled, "timezone": hours.timezone, "weekly_hours": hours.weekly_hours,
                "notify_agents": hours.notify_agents, "notify_after_seconds": hours.notify_after_seconds,
                "daily_digest": hours.daily_digest}

    @extend_schema(responses=OfficeHoursSerializer)
    def get(self, request: Request) -> Response:
        from chat import handoff

        hours = handoff.office_hours_get()
        return Response({**self.OfficeHoursSerializer(self._body(hours)).data,
                         "open_now": handoff.office_hours_open(hours)})

    @extend_schema(request=OfficeHoursSerializer, responses=OfficeHoursSerializer)
    def put(self, request: Request) -> Response:
        from chat import handoff

        serializer = self.OfficeHoursSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        hours = handoff.office_hours_set(
            enabled=data["enabled"], timezone_name=data["timezone"], weekly_hours=data["weekly_hours"],
            notify_agents=data.get("notify_agents"), notify_after_seconds=data.get("notify_after_seconds"),
            daily_digest=data.get("daily_digest"))
        return Response({**self.OfficeHoursSerializer(self._body(hours)).data,
                         "open_now": handoff.office_hours_open(hours)})


# --- visitor data rights (issue #18; docs/handoff.md "Visitor data rights") ---------------------------------------
class VisitorExportApi(APIView):
    """Everything the workspace holds of one widget visitor, as JSON (an attachment)."""

    required_permission = "visitors.manage"

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, visitor_id: str) -> Response:
        from chat import visitors

        document = visitors.visitor_export(workspace=request.tenant, actor=request.user, visitor_id=visitor_id)
        response = Response(document)
        response["Content-Disposition"] = 'attachment; filename="visitor-export.json"'
        return response


class VisitorEraseApi(APIView):
    """Erase one widget visitor: their conversations, messages, notes, analytics events and Redis logs."""

    required_permission = "visitors.manage"

    class OutputSerializer(serializers.Serializer):
        conversations = serializers.IntegerField()
        messages = serializers.IntegerField()

    @extend_schema(request=None, responses=OutputSerializer)
    def delete(self, request: Request, visitor_id: str) -> Response:
        from chat import visitors

        counts = visitors.visitor_erase(workspace=request.tenant, actor=request.user, visitor_id=visitor_id)
        return Response(self.OutputSerializer(counts).data)


class _LeadFilterSerializer(serializers.Serializer):
    embed = serializers.IntegerField(required=False, min_value=1, max_value=2**62, help_text="Only this widget's.")


class LeadListApi(APIView):
    """The leads visitors left in the widgets' lead forms, newest first (docs/widget.md "Lead form")."""

    required_permission = "conversations.view"

    @extend_schema(parameters=[_LeadFilterSerializer], responses=LeadOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        from chat.leads import lead_list

        filters = _LeadFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = ApiPagination()
        page = paginator.paginate_queryset(lead_list(embed_id=filters.validated_data.get("embed")), request, view=self)
        return paginator.get_paginated_response(LeadOutputSerializer(page, many=True).data)


class _CsvWithJsonErrors(BaseContentNegotiation):
    """The CSV export answers CSV whatever the Accept header says; its errors are JSON like every other error."""

    def select_parser(self, request: Any, parsers: Any) -> Any:
        return parsers[0]

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class LeadExportApi(APIView):
    """Every lead as CSV (columns: chat.leads.LEAD_CSV_HEADER), newest first; the dashboard serves the same file."""

    required_permission = "conversations.view"
    content_negotiation_class = _CsvWithJsonErrors
    renderer_classes = [JSONRenderer]

    @extend_schema(parameters=[_LeadFilterSerializer], responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request: Request) -> Any:
        from chat.views import lead_csv_response

        filters = _LeadFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return lead_csv_response(request._request.tenant, embed_id=filters.validated_data.get("embed"))
