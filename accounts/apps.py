from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from accounts.services import billing_hooks_connect

        billing_hooks_connect()  # audit log and owner emails for billing events, the seats counter
        from accounts import portability  # noqa: F401  (connects the export/import receivers)
