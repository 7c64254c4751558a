"""Errors of the API as JSON: {"error": <code>, "detail": ...} with a 4xx status."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def json_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.messages)
    response = exception_handler(exc, context)
    if response is None:
        return None  # a server error: Django's 500
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        detail = detail["detail"]
    response.data = {"error": code, "detail": detail, "status": response.status_code}
    return response


def error(status_code: int, code: str, detail) -> Response:
    return Response({"error": code, "detail": detail, "status": status_code}, status=status_code)


NOT_FOUND = status.HTTP_404_NOT_FOUND
