"""STUN (RFC 8489) advertised through XEP-0215; its own issue fills it in."""

from django.apps import AppConfig


class StunConfig(AppConfig):
    name = "stun"
    verbose_name = "STUN service"
