"""Settings an administrator may change while the server runs.

The environment (django.conf.settings) gives every value its default; an
override set here wins until it is removed. The core reads these at call
time through `runtime_settings.get(name)`, which is a dictionary look-up:
no database query. Whoever stores overrides (the admin console keeps them
in its ServerSetting table) loads them at start and calls `update()` after
each change, in this process; `subscribe()` lets the core re-apply values it
caches elsewhere (the server's Limits) when they change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings


class RuntimeSettings:
    def __init__(self) -> None:
        self._overrides: dict[str, Any] = {}
        self._subscribers: list[Callable[[RuntimeSettings], None]] = []

    def get(self, name: str, default: Any = None) -> Any:
        """The override for `name` if there is one, else settings.<name>."""
        if name in self._overrides:
            return self._overrides[name]
        return getattr(settings, name, default)

    def overrides(self) -> dict[str, Any]:
        return dict(self._overrides)

    def update(self, values: Mapping[str, Any], *, replace: bool = False) -> None:
        """Set overrides (a value of None removes one); `replace` drops the rest."""
        if replace:
            self._overrides.clear()
        for name, value in values.items():
            if value is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = value
        for subscriber in list(self._subscribers):
            subscriber(self)

    def subscribe(self, callback: Callable[[RuntimeSettings], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[RuntimeSettings], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)


runtime_settings = RuntimeSettings()
