from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models import Sum

        from config.body_caps import body_cap_register
        from documents import services, signals  # noqa: F401  (signals connects the receivers)
        from documents.models import Document
        from tenants.billing import usage_counter_register

        # Billing counts what is stored now (counters run inside the workspace's schema): every row counts, failed
        # ones too, since their files are kept; deleting a document frees its share at once.
        usage_counter_register("documents", lambda workspace: Document.objects.count())
        usage_counter_register(
            "storage_bytes", lambda workspace: Document.objects.aggregate(total=Sum("size_bytes"))["total"] or 0
        )
        # Upload bodies over the per-file cap are refused before the server reads them (config.body_caps).
        body_cap_register(url_names=["api-documents", "api-document-version"],
                          limit=services.upload_body_max_bytes, error=services.upload_body_too_large_error)
        body_cap_register(url_names=["api-documents-batch"],
                          limit=lambda: services.upload_body_max_bytes(files=settings.DATA_UPLOAD_MAX_NUMBER_FILES),
                          error=services.upload_body_too_large_error)
