"""Routes of the widget: dashboard pages (under /widgets/), the API (under /api/v1/embeds/) and the public widget
doors (under /widget/v1/, on the workspace host)."""
from django.urls import path

from embeds import apis, views, widget_views

dashboard_urlpatterns = [
    path("new/", views.widget_create, name="widget-create"),
    path("<int:embed_id>/", views.widget_edit, name="widget-edit"),
    path("<int:embed_id>/actions/", views.widget_action, name="widget-action"),
]

api_urlpatterns = [
    path("", apis.EmbedListCreateApi.as_view(), name="api-embeds"),
    path("<int:embed_id>/", apis.EmbedDetailApi.as_view(), name="api-embed"),
    path("<int:embed_id>/rotate-key/", apis.EmbedRotateKeyApi.as_view(), name="api-embed-rotate-key"),
    path("<int:embed_id>/identity-secret/", apis.EmbedIdentitySecretApi.as_view(), name="api-embed-identity-secret"),
    path("<int:embed_id>/deactivate/", apis.EmbedDeactivateApi.as_view(), name="api-embed-deactivate"),
    path("<int:embed_id>/activate/", apis.EmbedActivateApi.as_view(), name="api-embed-activate"),
    path("<int:embed_id>/starter-suggestions/", apis.EmbedStarterSuggestionsApi.as_view(),
         name="api-embed-starter-suggestions"),
]

widget_urlpatterns = [
    path("loader.js", widget_views.widget_loader, name="widget-loader"),
    path("config/<str:public_key>/", widget_views.widget_config, name="widget-config"),
    path("frame/<str:public_key>/", widget_views.widget_frame, name="widget-frame"),
    path("session/<str:public_key>/", widget_views.widget_session, name="widget-session"),
    path("conversations/", widget_views.widget_conversations, name="widget-conversations"),
    path("conversations/<str:conversation_id>/messages/", widget_views.widget_conversation_messages,
         name="widget-conversation-messages"),
    path("conversations/<str:conversation_id>/lead/", widget_views.widget_conversation_lead,
         name="widget-conversation-lead"),
    path("conversations/<str:conversation_id>/followups/", widget_views.widget_conversation_followups,
         name="widget-conversation-followups"),
]
