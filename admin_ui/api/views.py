"""The REST API under /api/: users, rosters, shared groups, live sessions,
broadcast, statistics, run-time settings, the audit log, and rooms when the
muc app has its models.

Staff only (IsAdminUser), by API token or the console's session; lists are
paginated (?page=); errors are JSON with a 4xx status (api/errors.py).
Every change is recorded in the audit log with via="api".
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import filters, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from xmpp.accounts import prepare_password
from xmpp.models import RosterItem, SharedGroup

from .. import live_sessions, server_settings
from ..audit import record
from ..models import AuditLogEntry
from ..optional_apps import optional_model
from .serializers import (
    AuditLogEntrySerializer,
    BroadcastResultSerializer,
    BroadcastSerializer,
    PasswordSerializer,
    RosterItemSerializer,
    ServerSettingsSerializer,
    SessionSerializer,
    SharedGroupSerializer,
    StatisticsSerializer,
    UserCreateSerializer,
    UserSerializer,
)

User = get_user_model()


def audit(request, action_name: str, target: str = "", **detail) -> None:
    record(request, action_name, target, via="api", **detail)


class UserViewSet(viewsets.ModelViewSet):
    """XMPP accounts. `?search=` looks in username, e-mail and names."""

    queryset = User.objects.order_by("username")
    lookup_field = "username"
    lookup_value_regex = "[^/]+"
    filter_backends = [filters.SearchFilter]
    search_fields = ["username", "email", "first_name", "last_name"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        if self.action == "create":
            return UserCreateSerializer
        if self.action == "password":
            return PasswordSerializer
        if self.action == "roster":
            return RosterItemSerializer
        if self.action == "sessions":
            return SessionSerializer
        return UserSerializer

    def perform_create(self, serializer) -> None:
        user = serializer.save()
        audit(self.request, "user.create", user.username, staff=user.is_staff)

    def perform_update(self, serializer) -> None:
        if serializer.instance == self.request.user and (
            serializer.validated_data.get("is_active") is False
            or serializer.validated_data.get("is_staff") is False
        ):
            raise ValidationError("you cannot lock yourself out or drop your own staff status")
        was_active = serializer.instance.is_active
        user = serializer.save()
        audit(self.request, "user.edit", user.username, changed=dict(serializer.validated_data))
        if was_active and not user.is_active:
            live_sessions.on_loop(
                live_sessions.kick_user, user.username, "not-authorized", "the account was locked"
            )

    def perform_destroy(self, instance) -> None:
        if instance == self.request.user:
            raise ValidationError("you cannot delete your own account")
        username = instance.username
        instance.delete()
        live_sessions.on_loop(
            live_sessions.kick_user, username, "not-authorized", "the account was removed"
        )
        audit(self.request, "user.delete", username)

    @extend_schema(request=PasswordSerializer, responses={204: None})
    @action(detail=True, methods=["post"])
    def password(self, request, username=None):
        """Set a new password (the SCRAM keys are derived from it)."""
        user = self.get_object()
        serializer = PasswordSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user.set_password(prepare_password(serializer.validated_data["password"]))
        user.save(update_fields=["password"])
        audit(request, "user.password_reset", user.username)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=RosterItemSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def roster(self, request, username=None):
        """The account's roster (RFC 6121 §2), shared-group contacts not included."""
        user = self.get_object()
        items = RosterItem.objects.filter(user=user, listed=True, removed=False).order_by("jid")
        page = self.paginate_queryset(items)
        return self.get_paginated_response(RosterItemSerializer(page, many=True).data)

    @extend_schema(responses=SessionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def sessions(self, request, username=None):
        """The account's live sessions on this server."""
        user = self.get_object()
        rows = live_sessions.on_loop(live_sessions.list_sessions, user.username)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(SessionSerializer(page, many=True).data)


class SharedGroupViewSet(viewsets.ModelViewSet):
    """Shared roster groups: members see each other in their rosters
    (at their next login)."""

    queryset = SharedGroup.objects.order_by("name").prefetch_related("members")
    serializer_class = SharedGroupSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def perform_create(self, serializer) -> None:
        group = serializer.save()
        audit(
            self.request,
            "group.create",
            group.name,
            members=[u.username for u in group.members.all()],
        )

    def perform_update(self, serializer) -> None:
        group = serializer.save()
        audit(
            self.request,
            "group.edit",
            group.name,
            members=[u.username for u in group.members.all()],
        )

    def perform_destroy(self, instance) -> None:
        name = instance.name
        instance.delete()
        audit(self.request, "group.delete", name)


class SessionList(APIView):
    """Live sessions of this server."""

    @extend_schema(
        parameters=[
            OpenApiParameter("user", str, description="only this account's sessions"),
            OpenApiParameter("page", int),
        ],
        responses=SessionSerializer(many=True),
    )
    def get(self, request):
        rows = live_sessions.on_loop(live_sessions.list_sessions, request.query_params.get("user"))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(SessionSerializer(page, many=True).data)


class SessionDetail(APIView):
    @extend_schema(responses=SessionSerializer)
    def get(self, request, session_id: str):
        for row in live_sessions.on_loop(live_sessions.list_sessions):
            if row["id"] == session_id:
                return Response(SessionSerializer(row).data)
        raise Http404("no such session")

    @extend_schema(responses={204: None})
    def delete(self, request, session_id: str):
        """Kick: the stream is closed with a <policy-violation/> stream error."""
        kicked = live_sessions.on_loop(live_sessions.kick, session_id)
        if kicked is None:
            raise Http404("no such session")
        audit(request, "session.kick", kicked["jid"], address=kicked["address"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class BroadcastView(APIView):
    @extend_schema(request=BroadcastSerializer, responses=BroadcastResultSerializer)
    def post(self, request):
        """A message from the server's domain to every available session."""
        serializer = BroadcastSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        count = live_sessions.on_loop(live_sessions.broadcast, data["body"], data["subject"])
        audit(
            request, "broadcast", "", subject=data["subject"], body=data["body"], recipients=count
        )
        return Response({"recipients": count})


class StatisticsView(APIView):
    @extend_schema(responses=StatisticsSerializer)
    def get(self, request):
        """Uptime, sessions, stanzas per second, memory, and the last hour's samples."""
        stats = live_sessions.on_loop(live_sessions.statistics)
        stats["accounts"] = User.objects.count()
        return Response(StatisticsSerializer(stats).data)


class ServerSettingsView(APIView):
    @extend_schema(responses=ServerSettingsSerializer)
    def get(self, request):
        """The run-time settings in force (environment defaults or overrides)."""
        return Response(server_settings.current())

    @extend_schema(request=ServerSettingsSerializer, responses=ServerSettingsSerializer)
    def patch(self, request):
        """Change run-time settings; applied at once, kept in the database."""
        serializer = ServerSettingsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changed = server_settings.save(dict(serializer.validated_data), request.user)
        for name, (old, new) in changed.items():
            audit(request, "settings.change", name, old=old, new=new)
        return Response(server_settings.current())


class AuditLogViewSet(viewsets.ReadOnlyModelViewSet):
    """Changes made through the console and the API, newest first."""

    queryset = AuditLogEntry.objects.all()
    serializer_class = AuditLogEntrySerializer


class OccupantSerializer(serializers.Serializer):
    nick = serializers.CharField()
    jid = serializers.CharField()
    role = serializers.CharField()
    sessions = serializers.IntegerField()


class RoomViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Rooms of the muc app (XEP-0045); `occupants` are those in the room now.
    Registered only when muc.Room exists (api/urls.py gives the serializer)."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        model = optional_model("muc", "Room")
        if model is None:
            raise Http404("the muc app has no rooms table")
        return model.objects.order_by("name")

    @extend_schema(responses=OccupantSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=OccupantSerializer)
    def occupants(self, request, name=None):
        occupants = live_sessions.on_loop(live_sessions.room_occupants, name)
        if occupants is None:
            self.get_object()  # 404 for a room that does not exist at all
            occupants = []
        page = self.paginate_queryset(occupants)
        return self.get_paginated_response(OccupantSerializer(page, many=True).data)


class NodeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Publish-subscribe nodes (XEP-0060) and their items. Registered only
    when pubsub.Node exists (api/urls.py gives the serializers)."""

    item_serializer_class = None
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        model = optional_model("pubsub", "Node")
        if model is None:
            raise Http404("the pubsub app has no nodes table")
        return model.objects.order_by("service", "name")

    @action(detail=True, methods=["get"])
    def items(self, request, pk=None):
        node = self.get_object()
        page = self.paginate_queryset(node.items.order_by("-published", "-pk"))
        return self.get_paginated_response(self.item_serializer_class(page, many=True).data)
