"""Models of apps the console shows when they exist (muc rooms, pubsub nodes),
looked up by name so that the console works without them."""

from __future__ import annotations

from django.apps import apps
from django.db import connection


def optional_model(app_label: str, model_name: str):
    """The model, if its app is installed, defines it and its table exists."""
    try:
        model = apps.get_model(app_label, model_name)
    except LookupError:
        return None
    if model._meta.db_table not in connection.introspection.table_names():
        return None
    return model
