from django.apps import AppConfig


class ImserverConfig(AppConfig):
    """Holds the project's own management commands (`runxmpp`)."""

    name = "imserver"
    verbose_name = "IM server"
