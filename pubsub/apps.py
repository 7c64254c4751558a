"""Publish-subscribe (XEP-0060) and PEP (XEP-0163); its own issue fills it in."""

from django.apps import AppConfig


class PubsubConfig(AppConfig):
    name = "pubsub"
    verbose_name = "Publish-subscribe"
