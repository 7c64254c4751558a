"""Serializers of the REST API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework import serializers

from xmpp.accounts import InvalidJID, InvalidPassword, prepare_password, prepare_username
from xmpp.models import RosterItem, SharedGroup

from ..models import AuditLogEntry
from ..server_settings import EDITABLE

User = get_user_model()
MAX_PASSWORD = 1024


def checked_password(value: str) -> str:
    try:
        prepare_password(value)
    except InvalidPassword as exc:
        raise serializers.ValidationError(str(exc)) from None
    return value


class UserSerializer(serializers.ModelSerializer):
    jid = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = [
            "username",
            "jid",
            "first_name",
            "last_name",
            "email",
            "is_staff",
            "is_active",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["username", "date_joined", "last_login"]

    def get_jid(self, user) -> str:
        return f"{user.username}@{settings.XMPP_DOMAIN}"


class UserCreateSerializer(UserSerializer):
    username = serializers.CharField(max_length=150, help_text="the JID localpart")
    password = serializers.CharField(
        write_only=True, max_length=MAX_PASSWORD, trim_whitespace=False
    )

    class Meta(UserSerializer.Meta):
        fields = UserSerializer.Meta.fields + ["password"]
        read_only_fields = ["date_joined", "last_login"]

    def validate_username(self, value: str) -> str:
        try:
            name = prepare_username(value)
        except InvalidJID as exc:
            raise serializers.ValidationError(str(exc)) from None
        if User.objects.filter(username=name).exists():
            raise serializers.ValidationError("An account with that name already exists.")
        return name

    def validate_password(self, value: str) -> str:
        return checked_password(value)

    def create(self, validated_data):
        password = validated_data.pop("password")
        user = User(**validated_data)
        user.set_password(prepare_password(password))
        user.save()
        return user


class PasswordSerializer(serializers.Serializer):
    password = serializers.CharField(max_length=MAX_PASSWORD, trim_whitespace=False)

    def validate_password(self, value: str) -> str:
        return checked_password(value)


class RosterItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = RosterItem
        fields = ["jid", "name", "groups", "subscription", "pending_out", "pending_in"]


class SharedGroupSerializer(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(
        slug_field="username", many=True, queryset=User.objects.all(), required=False
    )

    class Meta:
        model = SharedGroup
        fields = ["id", "name", "members"]


class SessionSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the stream id")
    jid = serializers.CharField()
    username = serializers.CharField()
    resource = serializers.CharField()
    address = serializers.CharField()
    transport = serializers.CharField()
    secure = serializers.BooleanField()
    available = serializers.BooleanField()
    priority = serializers.IntegerField()


class BroadcastSerializer(serializers.Serializer):
    body = serializers.CharField(max_length=10000)
    subject = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class BroadcastResultSerializer(serializers.Serializer):
    recipients = serializers.IntegerField()


class SampleSerializer(serializers.Serializer):
    at = serializers.FloatField()
    sessions = serializers.IntegerField()
    stanzas_per_second = serializers.FloatField()


class StatisticsSerializer(serializers.Serializer):
    running = serializers.BooleanField()
    domain = serializers.CharField()
    version = serializers.CharField()
    uptime_seconds = serializers.IntegerField()
    sessions = serializers.IntegerField()
    streams = serializers.IntegerField()
    accounts = serializers.IntegerField()
    stanzas_received = serializers.IntegerField()
    stanzas_per_second = serializers.FloatField()
    memory_bytes = serializers.IntegerField()
    sample_interval = serializers.FloatField()
    history = SampleSerializer(many=True)


class ServerSettingsSerializer(serializers.Serializer):
    """The settings an administrator may change at run time; a PATCH may send any subset."""

    XMPP_REGISTRATION_ENABLED = serializers.BooleanField(required=False)
    XMPP_STANZAS_PER_SECOND = serializers.IntegerField(
        required=False,
        min_value=EDITABLE["XMPP_STANZAS_PER_SECOND"].minimum,
        max_value=EDITABLE["XMPP_STANZAS_PER_SECOND"].maximum,
    )
    XMPP_C2S_BYTES_PER_SECOND = serializers.IntegerField(
        required=False,
        min_value=EDITABLE["XMPP_C2S_BYTES_PER_SECOND"].minimum,
        max_value=EDITABLE["XMPP_C2S_BYTES_PER_SECOND"].maximum,
    )
    XMPP_MAX_UNAUTHENTICATED_PER_IP = serializers.IntegerField(
        required=False,
        min_value=EDITABLE["XMPP_MAX_UNAUTHENTICATED_PER_IP"].minimum,
        max_value=EDITABLE["XMPP_MAX_UNAUTHENTICATED_PER_IP"].maximum,
    )
    XMPP_MAX_SESSIONS_PER_IP = serializers.IntegerField(
        required=False,
        min_value=EDITABLE["XMPP_MAX_SESSIONS_PER_IP"].minimum,
        max_value=EDITABLE["XMPP_MAX_SESSIONS_PER_IP"].maximum,
    )
    XMPP_MOTD = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=EDITABLE["XMPP_MOTD"].max_length,
        trim_whitespace=False,
    )

    def validate(self, attrs):
        unknown = (
            set(self.initial_data) - set(self.fields)
            if isinstance(self.initial_data, dict)
            else set()
        )
        if unknown:
            raise serializers.ValidationError(
                {name: "not a setting that can be changed at run time" for name in unknown}
            )
        return attrs


class AuditLogEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditLogEntry
        fields = ["id", "created", "actor_name", "action", "target", "detail", "address", "via"]
