"""Forms of the console."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from xmpp.accounts import InvalidJID, InvalidPassword, prepare_password, prepare_username
from xmpp.models import SharedGroup

from .server_settings import EDITABLE


def clean_password_field(password: str) -> str:
    try:
        prepare_password(password)
    except InvalidPassword as exc:
        raise forms.ValidationError(str(exc)) from None
    return password


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="The JID localpart.")
    password = forms.CharField(widget=forms.PasswordInput(render_value=False))
    email = forms.EmailField(required=False)
    is_staff = forms.BooleanField(required=False, label="Administrator (staff)")

    def clean_username(self) -> str:
        try:
            name = prepare_username(self.cleaned_data["username"])
        except InvalidJID as exc:
            raise forms.ValidationError(str(exc)) from None
        if get_user_model().objects.filter(username=name).exists():
            raise forms.ValidationError("An account with that name already exists.")
        return name

    def clean_password(self) -> str:
        return clean_password_field(self.cleaned_data["password"])


class UserEditForm(forms.ModelForm):
    class Meta:
        model = get_user_model()
        fields = ["first_name", "last_name", "email", "is_staff", "is_active"]
        labels = {"is_active": "Active (unlocked)", "is_staff": "Administrator (staff)"}


class PasswordResetForm(forms.Form):
    password = forms.CharField(label="New password", widget=forms.PasswordInput)

    def clean_password(self) -> str:
        return clean_password_field(self.cleaned_data["password"])


class SharedGroupForm(forms.ModelForm):
    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.order_by("username"),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 10}),
    )

    class Meta:
        model = SharedGroup
        fields = ["name", "members"]


class BroadcastForm(forms.Form):
    subject = forms.CharField(max_length=200, required=False)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=10000)


class ServerSettingsForm(forms.Form):
    """One field per admin_ui.server_settings.EDITABLE entry."""

    def __init__(self, *args, values: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, editable in EDITABLE.items():
            help_text = f"{editable.help} Default (environment): {editable.default!r}."
            if editable.kind is bool:
                field = forms.BooleanField(required=False, help_text=help_text)
            elif editable.kind is int:
                field = forms.IntegerField(
                    min_value=editable.minimum, max_value=editable.maximum, help_text=help_text
                )
            else:
                field = forms.CharField(
                    required=False,
                    max_length=editable.max_length,
                    widget=forms.Textarea(attrs={"rows": 3}),
                    help_text=help_text,
                )
            field.label = editable.label
            field.initial = values[name]
            self.fields[name] = field


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for.")
