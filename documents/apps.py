from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"

    def ready(self) -> None:
        from django.db.models import Sum

        from documents import signals  # noqa: F401  (connects the receivers)
        from documents.models import Document
        from tenants.billing import usage_counter_register

        # Billing counts what is stored now (counters run inside the workspace's schema): every row counts, failed
        # ones too, since their files are kept; deleting a document frees its share at once.
        usage_counter_register("documents", lambda workspace: Document.objects.count())
        usage_counter_register(
            "storage_bytes", lambda workspace: Document.objects.aggregate(total=Sum("size_bytes"))["total"] or 0
        )
