"""django-allauth, fitted to XMPP accounts.

Nobody signs up on the web (accounts are made by administrators, the
management commands or XEP-0077); a password set through allauth (change,
reset) is prepared as the SASL side prepares it (RFC 8265 OpaqueString)
before Django hashes it, so the new SCRAM keys (xmpp.passwords) serve XMPP
logins at once. Staff land on the console, everyone else on the
self-service page.
"""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.signals import password_changed
from django.dispatch import receiver
from django.urls import reverse

from xmpp.accounts import InvalidPassword, prepare_password


class ConsoleAccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return False

    def get_login_redirect_url(self, request) -> str:
        if request.user.is_staff:
            return reverse("admin_ui:dashboard")
        return reverse("admin_ui:selfservice")

    def clean_password(self, password: str, user=None) -> str:
        password = super().clean_password(password, user)
        try:
            prepare_password(password)
        except InvalidPassword as exc:
            from django import forms

            raise forms.ValidationError(str(exc)) from None
        return password

    def set_password(self, user, password: str) -> None:
        user.set_password(prepare_password(password))
        user.save(update_fields=["password"])


@receiver(password_changed)
def record_password_change(sender, request, user, **kwargs) -> None:
    from .audit import record

    record(request, "password.change", user.get_username())
