from django.apps import AppConfig


class EmbedsConfig(AppConfig):
    name = "embeds"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from chat.consumers import socket_authenticator_register
        from embeds.consumers import widget_visitor_principal
        from embeds.models import Embed
        from embeds.widget_views import cors_allowed_by_embed
        from tenants.billing import usage_counter_register

        # Billing asks us how many widgets a workspace uses (tenants sits below embeds: STYLE.md floors).
        usage_counter_register("widgets", lambda workspace: Embed.objects.filter(is_active=True).count())
        # The conversation socket lets widget visitors in through this hook (chat does not import embeds).
        socket_authenticator_register(widget_visitor_principal)
        # django-cors-headers: CORS for /widget/v1/config/ is decided per embed by the view (its allowed origins).
        check_request_enabled.connect(cors_allowed_by_embed, dispatch_uid="embeds.cors_allowed_by_embed")
        # An erased visitor's daily answer counters go with them (chat.visitors).
        from chat.signals import visitor_erasing
        from embeds.limits import visitor_counters_erase

        visitor_erasing.connect(visitor_counters_erase, dispatch_uid="embeds.visitor_counters_erase", weak=False)
