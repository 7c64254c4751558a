"""The web admin console and REST API; its own issue fills it in."""

from django.apps import AppConfig


class AdminUiConfig(AppConfig):
    name = "admin_ui"
    verbose_name = "Admin console"
