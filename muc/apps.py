"""Multi-user chat (XEP-0045) at conference.<domain>, as a plugin of the core.

ready() registers the service with the router under XMPP_MUC_SUBDOMAIN and
a session-closed hook (an occupant whose session ends leaves its rooms);
the core never imports this app by name. See muc.service for the stanzas.
"""

from django.apps import AppConfig


class MucConfig(AppConfig):
    name = "muc"
    verbose_name = "Multi-user chat"

    def ready(self) -> None:
        from xmpp.plugins import plugins

        from .service import room_nick, service, service_subdomain

        plugins.service(service_subdomain(), service)
        plugins.on_session_closed(service.session_closed)
        plugins.room_nick(room_nick)
