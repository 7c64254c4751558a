"""Publish-subscribe (XEP-0060) at pubsub.<domain> and PEP (XEP-0163) on
user JIDs, with Celery fan-out; see pubsub/registration.py for what it
plugs into the core."""

from django.apps import AppConfig


class PubsubConfig(AppConfig):
    name = "pubsub"
    verbose_name = "Publish-subscribe"

    def ready(self) -> None:
        from .registration import register

        register()
