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
        # The assistant settings' cache (chat.selectors) follows every saved or deleted row.
        from django.db.models.signals import post_delete, post_save

        from chat.models import AssistantSettings
        from chat.selectors import assistant_settings_changed

        def settings_changed(**_: object) -> None:
            assistant_settings_changed()

        post_save.connect(settings_changed, sender=AssistantSettings, weak=False,
                          dispatch_uid="chat.assistant_settings_saved")
        post_delete.connect(settings_changed, sender=AssistantSettings, weak=False,
                            dispatch_uid="chat.assistant_settings_deleted")
