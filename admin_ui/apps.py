"""The web admin console and REST API (admin_ui/).

At start it registers, through the core's plugin registry (never imported
by the core):
- a start-up task on runxmpp's loop (`plugins.listener`) that loads the
  run-time settings stored in the database into xmpp.runtime_settings and
  starts the statistics sampler;
- a SIGHUP reload step (`plugins.on_reload`) that loads those settings again,
  for a row changed behind the console's back (another process, a shell);
- an initial-presence hook that sends the message of the day.
"""

import asyncio

from django.apps import AppConfig


class AdminUiConfig(AppConfig):
    name = "admin_ui"
    verbose_name = "Admin console"

    def ready(self) -> None:
        from xmpp.plugins import plugins

        from . import login  # noqa: F401 - connects the password_changed receiver

        if hasattr(plugins, "listener"):
            plugins.listener(start_console)
        plugins.on_reload("run-time settings")(reload_settings)
        plugins.on_initial_presence(send_message_of_the_day)


async def start_console(host: str):
    """Run on runxmpp's loop once the XMPP listeners are up."""
    from asgiref.sync import sync_to_async

    from xmpp.server import XmppServer

    from . import server_settings
    from .statistics import sampler

    server_settings.apply(await sync_to_async(server_settings.load_overrides)())
    task = None
    if XmppServer.current is not None:
        task = asyncio.get_running_loop().create_task(sampler.run(XmppServer.current))

    async def stop() -> None:
        if task is not None:
            task.cancel()

    return stop


async def reload_settings() -> str:
    """The ServerSetting rows, read again (the ORM in a worker thread) and applied."""
    from asgiref.sync import sync_to_async

    from . import server_settings

    overrides = await sync_to_async(server_settings.load_overrides)()
    server_settings.apply(overrides)
    return f"run-time settings ({', '.join(sorted(overrides)) or 'no overrides'})"


def send_message_of_the_day(session) -> None:
    from xmpp.runtime_settings import runtime_settings

    from .live_sessions import server_message

    text = runtime_settings.get("XMPP_MOTD", "")
    if text:
        message = server_message(session.server, session.jid_str, text, "Message of the day")
        session.server.router.delivery.to_session(session, message)
