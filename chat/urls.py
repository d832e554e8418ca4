"""Routes of conversations: the dashboard pages (under /conversations/) and the API (under /api/v1/conversations/)."""
from django.urls import path

from chat import apis, views

dashboard_urlpatterns = [
    path("", views.conversation_list, name="conversations"),
    path("inbox/", views.inbox, name="inbox"),
    path("office-hours/", views.office_hours_settings, name="office-hours"),
    path("leads.csv", views.leads_export, name="leads-export"),
    path("try/", views.conversation_try_start, name="conversation-try-start"),
    path("try/<uuid:conversation_id>/", views.conversation_try, name="conversation-try"),
    path("<uuid:conversation_id>/", views.conversation_transcript, name="conversation-transcript"),
    # visitor data rights (issue #18)
    path("visitors/<str:visitor_id>/", views.visitor_data, name="visitor-data"),
    path("visitors/<str:visitor_id>/export/", views.visitor_data_export, name="visitor-data-export"),
]

api_urlpatterns = [
    path("", apis.ConversationListCreateApi.as_view(), name="api-conversations"),
    # human handoff (issue #6; docs/handoff.md)
    path("inbox/", apis.InboxApi.as_view(), name="api-inbox"),
    path("office-hours/", apis.OfficeHoursApi.as_view(), name="api-office-hours"),
    # visitor data rights (issue #18; docs/handoff.md)
    path("visitors/<str:visitor_id>/", apis.VisitorEraseApi.as_view(), name="api-visitor"),
    path("visitors/<str:visitor_id>/export/", apis.VisitorExportApi.as_view(), name="api-visitor-export"),
    path("<uuid:conversation_id>/join/", apis.ConversationJoinApi.as_view(), name="api-conversation-join"),
    path("<uuid:conversation_id>/agent-messages/", apis.ConversationAgentMessageApi.as_view(),
         name="api-conversation-agent-messages"),
    path("<uuid:conversation_id>/notes/", apis.ConversationNoteApi.as_view(), name="api-conversation-notes"),
    path("<uuid:conversation_id>/hand-back/", apis.ConversationHandBackApi.as_view(),
         name="api-conversation-hand-back"),
    path("<uuid:conversation_id>/assign/", apis.ConversationAssignApi.as_view(), name="api-conversation-assign"),
    path("<uuid:conversation_id>/close/", apis.ConversationCloseApi.as_view(), name="api-conversation-close"),
    path("<uuid:conversation_id>/read/", apis.ConversationReadApi.as_view(), name="api-conversation-read"),
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

lead_api_urlpatterns = [
    path("", apis.LeadListApi.as_view(), name="api-leads"),
    path("export/", apis.LeadExportApi.as_view(), name="api-leads-export"),
]
