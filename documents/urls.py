"""Routes of the knowledge base: the dashboard pages (under /knowledge/) and the API (under /api/v1/documents/)."""
from django.urls import path

from documents import apis, curated_apis, curated_views, views

dashboard_urlpatterns = [
    path("sources/", views.sources_index, name="sources"),
    path("sources/add/", views.source_add, name="source-add"),
    path("sources/<int:source_id>/", views.source_detail, name="source-detail"),
    path("sources/<int:source_id>/settings/", views.source_settings, name="source-settings"),
    path("sources/<int:source_id>/sync/", views.source_sync_now, name="source-sync"),
    path("sources/<int:source_id>/cancel/", views.source_cancel, name="source-cancel"),
    path("sources/<int:source_id>/resume/", views.source_resume, name="source-resume"),
    path("sources/<int:source_id>/delete/", views.source_remove, name="source-delete"),
    path("failed/", views.knowledge_failed, name="knowledge-failed"),
    path("add-text/", views.knowledge_add_text, name="knowledge-add-text"),
    path("add-faq/", views.knowledge_add_faq, name="knowledge-add-faq"),
    path("import-url/", views.knowledge_import_url, name="knowledge-import-url"),
    path("reindex/", views.knowledge_reindex_all, name="knowledge-reindex-all"),
    path("curated/", curated_views.curated_index, name="curated-answers"),
    path("curated/new/", curated_views.curated_new, name="curated-answer-new"),
    path("curated/<int:curated_answer_id>/", curated_views.curated_edit, name="curated-answer-edit"),
    path("curated/<int:curated_answer_id>/delete/", curated_views.curated_delete, name="curated-answer-delete"),
    path("<int:document_id>/", views.knowledge_detail, name="knowledge-detail"),
    path("<int:document_id>/delete/", views.knowledge_delete, name="knowledge-delete"),
    path("<int:document_id>/retry/", views.knowledge_retry, name="knowledge-retry"),
    path("<int:document_id>/reindex/", views.knowledge_reindex, name="knowledge-reindex"),
    path("<int:document_id>/version/", views.knowledge_new_version, name="knowledge-new-version"),
]

api_urlpatterns = [
    path("", apis.DocumentListUploadApi.as_view(), name="api-documents"),
    path("batch/", apis.DocumentBatchUploadApi.as_view(), name="api-documents-batch"),
    path("text/", apis.DocumentTextCreateApi.as_view(), name="api-documents-text"),
    path("faq/", apis.DocumentFaqCreateApi.as_view(), name="api-documents-faq"),
    path("import-url/", apis.DocumentUrlImportApi.as_view(), name="api-documents-import-url"),
    path("failed/", apis.DocumentFailedListApi.as_view(), name="api-documents-failed"),
    path("reindex/", apis.WorkspaceReindexApi.as_view(), name="api-documents-reindex-all"),
    path("<int:document_id>/", apis.DocumentDetailApi.as_view(), name="api-document"),
    path("<int:document_id>/chunks/", apis.DocumentChunksApi.as_view(), name="api-document-chunks"),
    path("<int:document_id>/retry/", apis.DocumentRetryApi.as_view(), name="api-document-retry"),
    path("<int:document_id>/reindex/", apis.DocumentReindexApi.as_view(), name="api-document-reindex"),
    path("<int:document_id>/version/", apis.DocumentVersionUploadApi.as_view(), name="api-document-version"),
]

curated_api_urlpatterns = [
    path("", curated_apis.CuratedAnswerListCreateApi.as_view(), name="api-curated-answers"),
    path("export/", curated_apis.CuratedAnswerExportApi.as_view(), name="api-curated-answers-export"),
    path("import/", curated_apis.CuratedAnswerImportApi.as_view(), name="api-curated-answers-import"),
    path("<int:curated_answer_id>/", curated_apis.CuratedAnswerDetailApi.as_view(), name="api-curated-answer"),
]

source_api_urlpatterns = [
    path("", apis.SourceListCreateApi.as_view(), name="api-sources"),
    path("<int:source_id>/", apis.SourceDetailApi.as_view(), name="api-source"),
    path("<int:source_id>/sync/", apis.SourceSyncApi.as_view(), name="api-source-sync"),
    path("<int:source_id>/runs/", apis.SourceRunListApi.as_view(), name="api-source-runs"),
    path("<int:source_id>/runs/<int:run_id>/", apis.SourceRunDetailApi.as_view(), name="api-source-run"),
    path("<int:source_id>/runs/<int:run_id>/pages/", apis.SourceRunPagesApi.as_view(), name="api-source-run-pages"),
    path("<int:source_id>/runs/<int:run_id>/cancel/", apis.SourceRunCancelApi.as_view(), name="api-source-run-cancel"),
    path("<int:source_id>/runs/<int:run_id>/resume/", apis.SourceRunResumeApi.as_view(), name="api-source-run-resume"),
]
