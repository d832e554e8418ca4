from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"

    def ready(self) -> None:
        from analytics.receivers import erasure_receivers_connect, receivers_connect

        # analytics sits on top (STYLE.md floors): chat, documents and embeds only send; we listen.
        receivers_connect()
        erasure_receivers_connect()

        from analytics.selectors import starter_question_candidates
        from embeds.starters import starter_candidates_register

        starter_candidates_register(starter_question_candidates)
