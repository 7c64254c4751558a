"""Routes of the REST API (mounted at /api/), its schema and Swagger UI."""

from __future__ import annotations

from django.apps import apps
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.routers import DefaultRouter

from . import views

ROOM_FIELDS = (
    "name",
    "title",
    "description",
    "public",
    "persistent",
    "members_only",
    "moderated",
    "max_occupants",
    "subject",
    "created",
)
NODE_FIELDS = ("id", "service", "name", "kind", "config", "created")
ITEM_FIELDS = ("item_id", "publisher", "published", "payload")


def model_serializer(model, names: tuple[str, ...], name: str):
    """A ModelSerializer of `model` with those of `names` it has."""
    fields = {f.name for f in model._meta.get_fields()}
    meta = type("Meta", (), {"model": model, "fields": [n for n in names if n in fields]})
    return type(name, (serializers.ModelSerializer,), {"Meta": meta})


def optional_viewsets():
    """(prefix, viewset) for the apps whose models exist: muc rooms, pubsub nodes."""
    found = []
    try:
        room = apps.get_model("muc", "Room")
    except LookupError:
        room = None
    if room is not None:
        serializer = model_serializer(room, ROOM_FIELDS, "RoomSerializer")
        found.append(
            ("rooms", type("RoomViewSet", (views.RoomViewSet,), {"serializer_class": serializer}))
        )
    try:
        node, item = apps.get_model("pubsub", "Node"), apps.get_model("pubsub", "Item")
    except LookupError:
        node = item = None
    if node is not None:
        node_serializer = model_serializer(node, NODE_FIELDS, "NodeSerializer")
        item_serializer = model_serializer(item, ITEM_FIELDS, "NodeItemSerializer")
        node_id = OpenApiParameter("id", int, OpenApiParameter.PATH)
        items = extend_schema(parameters=[node_id], responses=item_serializer(many=True))(
            views.NodeViewSet.items
        )
        viewset = type(
            "NodeViewSet",
            (views.NodeViewSet,),
            {
                "serializer_class": node_serializer,
                "item_serializer_class": item_serializer,
                "items": items,
            },
        )
        viewset = extend_schema_view(retrieve=extend_schema(parameters=[node_id]))(viewset)
        found.append(("nodes", viewset))
    return found


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI; a refused request from an API client gets a JSON error."""

    renderer_classes = [*SpectacularSwaggerView.renderer_classes, JSONRenderer]


router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("users", views.UserViewSet, basename="user")
router.register("groups", views.SharedGroupViewSet, basename="group")
router.register("audit-log", views.AuditLogViewSet, basename="audit")
for prefix, viewset in optional_viewsets():
    router.register(prefix, viewset, basename=prefix.rstrip("s"))

urlpatterns = [
    path("sessions/", views.SessionList.as_view(), name="sessions"),
    path("sessions/<str:session_id>/", views.SessionDetail.as_view(), name="session"),
    path("broadcast/", views.BroadcastView.as_view(), name="broadcast"),
    path("stats/", views.StatisticsView.as_view(), name="stats"),
    path("settings/", views.ServerSettingsView.as_view(), name="settings"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="admin_ui:api:schema"), name="docs"),
    *router.urls,
]
