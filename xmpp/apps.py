"""The XMPP core app: registers the server's own features with the router."""

from importlib import import_module

from django.apps import AppConfig

# Each module registers its handlers with xmpp.plugins when imported.
FEATURE_MODULES = [
    "features",  # disco, ping, version, time (XEP-0030, 0199, 0092, 0202)
    "roster",  # rosters, versioning, shared groups (RFC 6121 §2, XEP-0237)
    "presence",  # presence and subscriptions (RFC 6121 §3, §4)
    "offline",  # offline messages (XEP-0160, XEP-0013)
    "vcard",  # vcard-temp and avatar hashes (XEP-0054, XEP-0153)
    "private_storage",  # private XML storage (XEP-0049)
    "last_activity",  # last activity and uptime (XEP-0012)
    "registration",  # in-band registration (XEP-0077)
    "blocking",  # blocking command (XEP-0191)
    "stream_management",  # acks and resumption (XEP-0198)
    "csi",  # client state indication (XEP-0352)
    "carbons",  # message carbons (XEP-0280)
    "push",  # push notifications (XEP-0357)
]


class XmppConfig(AppConfig):
    name = "xmpp"
    verbose_name = "XMPP core"

    def ready(self) -> None:
        for module in FEATURE_MODULES:
            import_module(f"{self.name}.{module}")
