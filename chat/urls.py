"""Routes of conversations: the dashboard pages (under /conversations/) and the API (under /api/v1/conversations/)."""
from django.urls import path

from chat import apis, views

dashboard_urlpatterns = [
    path("", views.conversation_list, name="conversations"),
    path("try/", views.conversation_try_start, name="conversation-try-start"),
    path("try/<uuid:conversation_id>/", views.conversation_try, name="conversation-try"),
    path("<uuid:conversation_id>/", views.conversation_transcript, name="conversation-transcript"),
]

api_urlpatterns = [
    path("", apis.ConversationListCreateApi.as_view(), name="api-conversations"),
    path("<uuid:conversation_id>/", apis.ConversationDetailApi.as_view(), name="api-conversation"),
    path("<uuid:conversation_id>/messages/", apis.ConversationMessageApi.as_view(), name="api-conversation-messages"),
    path(
        "<uuid:conversation_id>/messages/<int:message_id>/feedback/", apis.MessageFeedbackApi.as_view(),
        name="api-message-feedback",
    ),
    path(
        "<uuid:conversation_id>/request-human/", apis.ConversationRequestHumanApi.as_view(),
        name="api-conversation-request-human",
    ),
]
