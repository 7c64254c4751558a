from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm

from . import server_settings
from .models import ApiToken, AuditLogEntry, ServerSetting


@admin.register(ServerSetting)
class ServerSettingAdmin(admin.ModelAdmin):
    """Prefer the console's Settings page, which checks values; changes here
    are applied to the running server too."""

    list_display = ["name", "value", "updated", "updated_by"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        server_settings.apply(server_settings.load_overrides())

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        server_settings.apply(server_settings.load_overrides())

    def delete_queryset(self, request, queryset) -> None:
        super().delete_queryset(request, queryset)
        server_settings.apply(server_settings.load_overrides())


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ["created", "actor_name", "action", "target", "via", "address"]
    list_filter = ["action", "via"]
    search_fields = ["actor_name", "action", "target"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created", "last_used"]
    readonly_fields = ["prefix", "digest", "created", "last_used"]


class AdminLoginForm(AdminAuthenticationForm):
    """Django admin's login, which knows nothing of two-factor: an account
    with an authenticator must log in through allauth (/accounts/login/),
    whose session then opens /admin/ too."""

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        from allauth.mfa.models import Authenticator

        if Authenticator.objects.filter(user=user).exists():
            raise forms.ValidationError(
                "This account uses two-factor authentication: log in at /accounts/login/.",
                code="mfa_required",
            )


admin.site.login_form = AdminLoginForm
