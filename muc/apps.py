"""Multi-user chat (XEP-0045) at conference.<domain>; its own issue fills it in."""

from django.apps import AppConfig


class MucConfig(AppConfig):
    name = "muc"
    verbose_name = "Multi-user chat"
