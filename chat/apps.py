from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"

    def ready(self) -> None:
        from chat.authority import authority_receivers_connect

        # Membership and workspace status changes (accounts, tenants: floors below) close the sockets they concern.
        authority_receivers_connect()
        # Staff notifications listen to chat's own handoff signal (the answer path does not call them).
        from chat.notifications import notification_receivers_connect

        notification_receivers_connect()
