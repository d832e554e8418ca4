"""REST endpoints of embed codes (/api/v1/embeds/): the same operations as the dashboard, for integrators.

Reading needs `widgets.view`, changing `widgets.manage` (accounts.roles; API keys: the read / write scopes). The
identity secret is returned once, by the call that generates it, and never again.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from embeds import selectors, services
from embeds.leads import lead_form_public
from embeds.models import Embed
from embeds.theme import BEHAVIOUR_DEFAULTS, THEME_DEFAULTS


class EmbedOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    public_key = serializers.CharField(help_text="Identifies the widget in the snippet; not a secret.")
    allowed_origins = serializers.ListField(child=serializers.CharField())
    is_active = serializers.BooleanField()
    theme = serializers.SerializerMethodField()
    behaviour = serializers.SerializerMethodField()
    identity_verification = serializers.BooleanField(source="identity_verification_enabled")
    identity_secret_hint = serializers.CharField(help_text="The last characters of the identity secret.")
    identity_legacy_hashes = serializers.BooleanField(
        help_text="Also accepts user hashes signed without a timestamp (they never expire).")
    starter_questions = serializers.ListField(child=serializers.CharField(), help_text="Up to 6 chips.")
    lead_form = serializers.SerializerMethodField()
    snippet = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    key_rotated_at = serializers.DateTimeField(allow_null=True)
    deactivated_at = serializers.DateTimeField(allow_null=True)

    def get_theme(self, embed: Embed) -> dict[str, Any]:
        return embed.theme()

    def get_behaviour(self, embed: Embed) -> dict[str, bool]:
        return embed.behaviour()

    def get_lead_form(self, embed: Embed) -> dict[str, Any]:
        return lead_form_public(embed.lead_form)

    def get_snippet(self, embed: Embed) -> str:
        return selectors.embed_snippet(embed=embed, base_url=selectors.workspace_base_url())


class EmbedWithSecretSerializer(EmbedOutputSerializer):
    identity_secret = serializers.CharField(
        allow_null=True, help_text="Shown once: the HMAC secret your backend signs user ids with."
    )


class _EmbedInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    allowed_origins = serializers.ListField(
        child=serializers.CharField(max_length=300), max_length=50,
        help_text="Origins of the pages that may show the widget: https://shop.example, https://*.shop.example.",
    )
    theme = serializers.DictField(required=False, help_text=f"Any of {sorted(THEME_DEFAULTS)}.")
    behaviour = serializers.DictField(child=serializers.BooleanField(), required=False,
                                      help_text=f"Any of {sorted(BEHAVIOUR_DEFAULTS)}.")
    starter_questions = serializers.ListField(
        child=serializers.CharField(max_length=150, allow_blank=True), max_length=20, required=False,
        help_text="Up to 6 questions shown as chips before the first message and after a decline.")
    lead_form = serializers.DictField(
        required=False, help_text='{"when": "off|before_chat|handoff", "fields": {"name|email|phone|custom": '
                                  '"off|optional|required"}, "custom_label": "Company"}')


def _embed(embed_id: int) -> Embed:
    embed = selectors.embed_get(embed_id=embed_id)
    if embed is None:
        raise NotFound("No such widget.")
    return embed


class EmbedListCreateApi(APIView):
    required_permission = {"GET": "widgets.view", "POST": "widgets.manage"}

    class EmbedCreateInputSerializer(_EmbedInputSerializer):
        identity_verification = serializers.BooleanField(
            default=False, help_text="Generate an identity secret now (returned once)."
        )

    @extend_schema(responses=EmbedOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(EmbedOutputSerializer(selectors.embed_list(), many=True).data)

    @extend_schema(request=EmbedCreateInputSerializer, responses={201: EmbedWithSecretSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.EmbedCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        embed = services.embed_create(
            name=data["name"], allowed_origins=data["allowed_origins"], theme=data.get("theme"),
            behaviour=data.get("behaviour"), created_by=request.user,
            starter_questions=data.get("starter_questions"), lead_form=data.get("lead_form"),
        )
        secret = None
        if data["identity_verification"]:
            embed, secret = services.embed_identity_secret_rotate(embed=embed, actor=request.user)
        return Response({**EmbedOutputSerializer(embed).data, "identity_secret": secret},
                        status=status.HTTP_201_CREATED)


class EmbedDetailApi(APIView):
    required_permission = {"GET": "widgets.view", "PATCH": "widgets.manage"}

    class EmbedUpdateInputSerializer(_EmbedInputSerializer):
        identity_legacy_hashes = serializers.BooleanField(
            required=False, help_text="Accept user hashes without `user_ts` (the old form); off for new widgets.")

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, partial=True, **kwargs)

    @extend_schema(responses=EmbedOutputSerializer)
    def get(self, request: Request, embed_id: int) -> Response:
        return Response(EmbedOutputSerializer(_embed(embed_id)).data)

    @extend_schema(request=EmbedUpdateInputSerializer, responses=EmbedOutputSerializer)
    def patch(self, request: Request, embed_id: int) -> Response:
        embed = _embed(embed_id)
        serializer = self.EmbedUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        embed = services.embed_update(embed=embed, actor=request.user, **serializer.validated_data)
        return Response(EmbedOutputSerializer(embed).data)


class EmbedRotateKeyApi(APIView):
    required_permission = "widgets.manage"

    @extend_schema(request=None, responses=EmbedOutputSerializer)
    def post(self, request: Request, embed_id: int) -> Response:
        embed = services.embed_public_key_rotate(embed=_embed(embed_id), actor=request.user)
        return Response(EmbedOutputSerializer(embed).data)


class EmbedIdentitySecretApi(APIView):
    """POST: turn identity verification on, or rotate its secret (returned once). DELETE: turn it off."""

    required_permission = "widgets.manage"

    @extend_schema(request=None, responses=EmbedWithSecretSerializer)
    def post(self, request: Request, embed_id: int) -> Response:
        embed, secret = services.embed_identity_secret_rotate(embed=_embed(embed_id), actor=request.user)
        return Response({**EmbedOutputSerializer(embed).data, "identity_secret": secret})

    @extend_schema(request=None, responses=EmbedOutputSerializer)
    def delete(self, request: Request, embed_id: int) -> Response:
        embed = services.embed_identity_disable(embed=_embed(embed_id), actor=request.user)
        return Response(EmbedOutputSerializer(embed).data)


class EmbedDeactivateApi(APIView):
    required_permission = "widgets.manage"

    @extend_schema(request=None, responses=EmbedOutputSerializer)
    def post(self, request: Request, embed_id: int) -> Response:
        return Response(EmbedOutputSerializer(services.embed_deactivate(embed=_embed(embed_id), actor=request.user)).data)


class EmbedActivateApi(APIView):
    required_permission = "widgets.manage"

    @extend_schema(request=None, responses=EmbedOutputSerializer)
    def post(self, request: Request, embed_id: int) -> Response:
        return Response(EmbedOutputSerializer(services.embed_activate(embed=_embed(embed_id), actor=request.user)).data)


class EmbedStarterSuggestionsApi(APIView):
    """Starter questions suggested from what this widget's customers ask (embeds.starters): asked at least twice in
    the last 30 days and answered at least 4 times in 5. Approve one by adding it to `starter_questions` (PATCH)."""

    required_permission = "widgets.view"

    class SuggestionSerializer(serializers.Serializer):
        question = serializers.CharField()
        count = serializers.IntegerField()
        answered_rate = serializers.FloatField()
        cluster_id = serializers.IntegerField()

    @extend_schema(responses=SuggestionSerializer(many=True))
    def get(self, request: Request, embed_id: int) -> Response:
        from embeds.starters import starter_questions_suggest

        return Response(self.SuggestionSerializer(starter_questions_suggest(embed=_embed(embed_id)), many=True).data)
