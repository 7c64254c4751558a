"""The console's pages: server-rendered, for staff only (access.staff_required).

Views are sync (the ORM, forms); what touches live sessions is handed to
the server's loop by live_sessions.on_loop. Every change is recorded in the
audit log; what destroys (delete, kick, revoke) asks for confirmation first
with a page of its own (GET shows the question, POST acts).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from xmpp.accounts import prepare_password
from xmpp.models import RosterItem, SharedGroup

from . import live_sessions, server_settings
from .access import login_required, staff_required
from .audit import record
from .forms import (
    ApiTokenForm,
    BroadcastForm,
    PasswordResetForm,
    ServerSettingsForm,
    SharedGroupForm,
    UserCreateForm,
    UserEditForm,
)
from .models import ApiToken, AuditLogEntry
from .optional_apps import optional_model

User = get_user_model()
PAGE_SIZE = 25


def confirm(request, question: str, action_label: str, cancel_url: str, danger: bool = True):
    return render(
        request,
        "admin_ui/confirm.html",
        {
            "question": question,
            "action_label": action_label,
            "cancel_url": cancel_url,
            "danger": danger,
        },
    )


# -- dashboard ------------------------------------------------------------------


def chart(history: list[dict], key: str, width: int = 600, height: int = 140) -> dict:
    """An SVG polyline of `key` over the samples, scaled to the largest value."""
    values = [h[key] for h in history]
    top = max(values + [1])
    if len(values) < 2:
        return {"points": "", "top": top, "width": width, "height": height}
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 10):.1f}" for i, v in enumerate(values)
    )
    return {"points": points, "top": top, "width": width, "height": height}


@staff_required
def dashboard(request):
    stats = live_sessions.on_loop(live_sessions.statistics)
    room_model = optional_model("muc", "Room")
    node_model = optional_model("pubsub", "Node")
    context = {
        "stats": stats,
        "uptime": datetime.timedelta(seconds=stats["uptime_seconds"]),
        "memory_mib": stats["memory_bytes"] / (1024 * 1024),
        "accounts": User.objects.count(),
        "rooms": room_model.objects.count() if room_model else None,
        "nodes": node_model.objects.count() if node_model else None,
        "sessions_chart": chart(stats["history"], "sessions"),
        "stanzas_chart": chart(stats["history"], "stanzas_per_second"),
        "domain": stats["domain"] or settings.XMPP_DOMAIN,
    }
    return render(request, "admin_ui/dashboard.html", context)


# -- users ----------------------------------------------------------------------


@staff_required
def users(request):
    query = request.GET.get("q", "").strip()
    accounts = User.objects.order_by("username")
    if query:
        accounts = accounts.filter(
            Q(username__icontains=query)
            | Q(email__icontains=query)
            | Q(first_name__icontains=query)
            | Q(last_name__icontains=query)
        )
    page = Paginator(accounts, PAGE_SIZE).get_page(request.GET.get("page"))
    online = {s["username"] for s in live_sessions.on_loop(live_sessions.list_sessions)}
    return render(request, "admin_ui/users.html", {"page": page, "q": query, "online": online})


@staff_required
def user_create(request):
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = User(username=data["username"], email=data["email"], is_staff=data["is_staff"])
        user.set_password(prepare_password(data["password"]))
        user.save()
        record(request, "user.create", user.username, staff=user.is_staff)
        messages.success(request, f"Account {user.username} created.")
        return redirect("admin_ui:user", username=user.username)
    return render(request, "admin_ui/user_create.html", {"form": form})


@staff_required
def user_detail(request, username):
    account = get_object_or_404(User, username=username)
    form = UserEditForm(request.POST or None, instance=account)
    if account == request.user:  # no locking oneself out
        form.fields["is_active"].disabled = form.fields["is_staff"].disabled = True
    if request.method == "POST" and form.is_valid():
        changed = form.changed_data
        form.save()
        if changed:
            record(
                request,
                "user.edit",
                account.username,
                changed={name: form.cleaned_data[name] for name in changed},
            )
        if "is_active" in changed and not account.is_active:
            live_sessions.on_loop(
                live_sessions.kick_user,
                account.username,
                "not-authorized",
                "the account was locked",
            )
        messages.success(request, "Saved.")
        return redirect("admin_ui:user", username=account.username)
    roster = RosterItem.objects.filter(user=account, listed=True, removed=False).order_by("jid")
    context = {
        "account": account,
        "form": form,
        "roster": roster,
        "sessions": live_sessions.on_loop(live_sessions.list_sessions, account.username),
        "groups": account.shared_groups.order_by("name"),
    }
    return render(request, "admin_ui/user_detail.html", context)


@staff_required
def user_password(request, username):
    account = get_object_or_404(User, username=username)
    form = PasswordResetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        account.set_password(prepare_password(form.cleaned_data["password"]))
        account.save(update_fields=["password"])
        record(request, "user.password_reset", account.username)
        messages.success(request, f"New password set for {account.username}.")
        return redirect("admin_ui:user", username=account.username)
    return render(request, "admin_ui/user_password.html", {"account": account, "form": form})


@staff_required
def user_lock(request, username):
    account = get_object_or_404(User, username=username)
    locking = account.is_active
    if account == request.user:
        messages.error(request, "You cannot lock your own account.")
        return redirect("admin_ui:user", username=account.username)
    if request.method != "POST":
        question = (
            f"Lock {account.username}? Their sessions are closed and they cannot log in."
            if locking
            else f"Unlock {account.username}?"
        )
        return confirm(
            request,
            question,
            "Lock" if locking else "Unlock",
            reverse("admin_ui:user", args=[account.username]),
            danger=locking,
        )
    account.is_active = not locking
    account.save(update_fields=["is_active"])
    if locking:
        live_sessions.on_loop(
            live_sessions.kick_user, account.username, "not-authorized", "the account was locked"
        )
    record(request, "user.lock" if locking else "user.unlock", account.username)
    messages.success(request, f"{account.username} {'locked' if locking else 'unlocked'}.")
    return redirect("admin_ui:user", username=account.username)


@staff_required
def user_delete(request, username):
    account = get_object_or_404(User, username=username)
    if account == request.user:
        messages.error(request, "You cannot delete your own account here.")
        return redirect("admin_ui:user", username=account.username)
    if request.method != "POST":
        return confirm(
            request,
            f"Delete the account {account.username} with its roster, offline messages and "
            "vCard? Its sessions are closed. This cannot be undone.",
            "Delete",
            reverse("admin_ui:user", args=[account.username]),
        )
    account.delete()
    live_sessions.on_loop(
        live_sessions.kick_user, username, "not-authorized", "the account was removed"
    )
    record(request, "user.delete", username)
    messages.success(request, f"Account {username} deleted.")
    return redirect("admin_ui:users")


# -- sessions -------------------------------------------------------------------


@staff_required
def sessions(request):
    rows = live_sessions.on_loop(live_sessions.list_sessions)
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "admin_ui/sessions.html", {"page": page})


@staff_required
def session_kick(request, session_id):
    found = [s for s in live_sessions.on_loop(live_sessions.list_sessions) if s["id"] == session_id]
    back = request.GET.get("next") or request.POST.get("next") or reverse("admin_ui:sessions")
    if not back.startswith("/"):
        back = reverse("admin_ui:sessions")
    if request.method != "POST":
        if not found:
            raise Http404("no such session")
        return confirm(
            request,
            f"Disconnect {found[0]['jid']} ({found[0]['address']})?",
            "Kick",
            back,
        )
    kicked = live_sessions.on_loop(live_sessions.kick, session_id)
    if kicked is None:
        messages.error(request, "That session has already ended.")
    else:
        record(request, "session.kick", kicked["jid"], address=kicked["address"])
        messages.success(request, f"{kicked['jid']} disconnected.")
    return redirect(back)


# -- groups ---------------------------------------------------------------------


@staff_required
def groups(request):
    rows = SharedGroup.objects.order_by("name").prefetch_related("members")
    return render(request, "admin_ui/groups.html", {"groups": rows})


@staff_required
def group_edit(request, pk=None):
    group = get_object_or_404(SharedGroup, pk=pk) if pk else None
    form = SharedGroupForm(request.POST or None, instance=group)
    if request.method == "POST" and form.is_valid():
        group = form.save()
        record(
            request,
            "group.create" if pk is None else "group.edit",
            group.name,
            members=sorted(u.username for u in group.members.all()),
        )
        messages.success(request, f"Group {group.name} saved. Members see it at their next login.")
        return redirect("admin_ui:groups")
    return render(request, "admin_ui/group_edit.html", {"form": form, "group": group})


@staff_required
def group_delete(request, pk):
    group = get_object_or_404(SharedGroup, pk=pk)
    if request.method != "POST":
        return confirm(
            request, f"Delete the shared group {group.name}?", "Delete", reverse("admin_ui:groups")
        )
    name = group.name
    group.delete()
    record(request, "group.delete", name)
    messages.success(request, f"Group {name} deleted.")
    return redirect("admin_ui:groups")


# -- rooms and nodes (when their apps have models) --------------------------------


@staff_required
def rooms(request):
    model = optional_model("muc", "Room")
    page = None
    if model is not None:
        page = Paginator(model.objects.order_by("name"), PAGE_SIZE).get_page(
            request.GET.get("page")
        )
    occupancy = live_sessions.on_loop(live_sessions.room_occupancy)
    return render(
        request,
        "admin_ui/rooms.html",
        {"page": page, "available": model is not None, "occupancy": occupancy},
    )


@staff_required
def room_detail(request, name):
    model = optional_model("muc", "Room")
    room = model.objects.filter(name=name).first() if model else None
    occupants = live_sessions.on_loop(live_sessions.room_occupants, name)
    if room is None and occupants is None:
        raise Http404("no such room")
    return render(
        request,
        "admin_ui/room_detail.html",
        {"room": room, "name": name, "occupants": occupants or []},
    )


@staff_required
def nodes(request):
    model = optional_model("pubsub", "Node")
    page = None
    if model is not None:
        rows = model.objects.order_by("service", "name").annotate(item_count=Count("items"))
        page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "admin_ui/nodes.html", {"page": page, "available": model is not None})


@staff_required
def node_detail(request, pk):
    model = optional_model("pubsub", "Node")
    if model is None:
        raise Http404("no pubsub nodes")
    node = get_object_or_404(model, pk=pk)
    items = Paginator(node.items.order_by("-published"), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "admin_ui/node_detail.html", {"node": node, "page": items})


# -- server ---------------------------------------------------------------------


@staff_required
def server_settings_view(request):
    form = ServerSettingsForm(request.POST or None, values=server_settings.current())
    if request.method == "POST" and form.is_valid():
        values = {
            name: server_settings.EDITABLE[name].clean(value)
            for name, value in form.cleaned_data.items()
        }
        changed = server_settings.save(values, request.user)
        for name, (old, new) in changed.items():
            record(request, "settings.change", name, old=old, new=new)
        messages.success(request, "Settings saved and applied." if changed else "Nothing changed.")
        return redirect("admin_ui:settings")
    overrides = set(server_settings.load_overrides())
    return render(request, "admin_ui/settings.html", {"form": form, "overrides": overrides})


@staff_required
def broadcast(request):
    form = BroadcastForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        count = live_sessions.on_loop(
            live_sessions.broadcast, form.cleaned_data["body"], form.cleaned_data["subject"]
        )
        record(
            request,
            "broadcast",
            "",
            subject=form.cleaned_data["subject"],
            body=form.cleaned_data["body"],
            recipients=count,
        )
        messages.success(request, f"Sent to {count} session{'s' if count != 1 else ''}.")
        return redirect("admin_ui:broadcast")
    return render(request, "admin_ui/broadcast.html", {"form": form})


def certificate_details() -> dict:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    if settings.XMPP_TLS_CERT:
        path = Path(settings.XMPP_TLS_CERT)
    else:
        path = Path(settings.XMPP_DATA_DIR) / f"{settings.XMPP_DOMAIN}.crt"
    if not path.exists():
        return {"path": path, "missing": True}
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return {
        "path": path,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.subject == cert.issuer,
        "names": names,
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "serial": format(cert.serial_number, "x"),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        "generated": not settings.XMPP_TLS_CERT,
    }


@staff_required
def certificate(request):
    return render(request, "admin_ui/certificate.html", {"cert": certificate_details()})


@staff_required
def audit_log(request):
    entries = AuditLogEntry.objects.all()
    query = request.GET.get("q", "").strip()
    if query:
        entries = entries.filter(
            Q(actor_name__icontains=query) | Q(action__icontains=query) | Q(target__icontains=query)
        )
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "admin_ui/audit.html", {"page": page, "q": query})


# -- API tokens -----------------------------------------------------------------


@staff_required
def tokens(request):
    form = ApiTokenForm(request.POST or None)
    new_key = None
    if request.method == "POST" and form.is_valid():
        token, new_key = ApiToken.objects.issue(request.user, form.cleaned_data["name"])
        record(request, "token.create", token.name, prefix=token.prefix)
        form = ApiTokenForm()
    rows = ApiToken.objects.filter(user=request.user)
    return render(
        request, "admin_ui/tokens.html", {"form": form, "tokens": rows, "new_key": new_key}
    )


@staff_required
def token_revoke(request, pk):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if request.method != "POST":
        return confirm(
            request,
            f"Revoke the API token {token.name} ({token.prefix}…)?",
            "Revoke",
            reverse("admin_ui:tokens"),
        )
    record(request, "token.revoke", token.name, prefix=token.prefix)
    token.delete()
    messages.success(request, "Token revoked.")
    return redirect("admin_ui:tokens")


# -- self-service (any account) ----------------------------------------------------


@login_required
def selfservice(request):
    own = live_sessions.on_loop(live_sessions.list_sessions, request.user.get_username())
    return render(
        request,
        "admin_ui/selfservice.html",
        {
            "sessions": own,
            "jid": f"{request.user.get_username()}@{settings.XMPP_DOMAIN}",
        },
    )


@login_required
@require_POST
def selfservice_kick(request, session_id):
    """A user may end one of their own sessions (a forgotten login)."""
    own = live_sessions.on_loop(live_sessions.list_sessions, request.user.get_username())
    if any(s["id"] == session_id for s in own):
        kicked = live_sessions.on_loop(live_sessions.kick, session_id)
        if kicked:
            record(request, "session.end_own", kicked["jid"])
            messages.success(request, f"{kicked['jid']} disconnected.")
    return redirect("admin_ui:selfservice")


def password_reset_unavailable(request):
    return render(request, "admin_ui/password_reset_unavailable.html")
