"""Who may see what: the console is for staff, the self-service page for any
account. Anonymous requests get 401 (with a link and a redirect to the login
page for browsers), logged-in non-staff 403."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.shortcuts import render


def login_required_response(request):
    login_url = f"{settings.LOGIN_URL}?{urlencode({'next': request.get_full_path()})}"
    return render(request, "admin_ui/login_required.html", {"login_url": login_url}, status=401)


def login_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return login_required_response(request)
        return view(request, *args, **kwargs)

    return wrapper


def staff_required(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return login_required_response(request)
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("the console is for administrators")
        return view(request, *args, **kwargs)

    return wrapper
