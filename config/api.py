"""API plumbing shared by every app: the error format and pagination.

Errors are ``{"code": ..., "message": ..., "field": ...}`` (``field`` optional)
with a 4xx status; validation errors report the first field at fault and list
every problem under ``errors``.
"""

from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Model, QuerySet
from django.http import Http404
from rest_framework import exceptions, pagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from oms.retry import is_session_lost
from oms.services import OrderError
from registry.ledger import LedgerError
from registry.services import RegistryError

_M = TypeVar("_M", bound=Model)


class ApiError(exceptions.APIException):
    """Raise from a view for a specific code and status."""

    def __init__(
        self, code: str, message: str, *, status_code: int = 400, field: str = ""
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.field = field


def error_body(
    code: str, message: str, field: str = "", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    body.update(extra)
    return body


def validation_error_body(detail: Any) -> dict[str, Any]:
    problems: list[dict[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, key if not path else f"{path}.{key}")
        elif isinstance(value, list):
            for inner in value:
                walk(inner, path)
        else:
            code = getattr(value, "code", "invalid") or "invalid"
            problems.append({"field": path, "code": str(code), "message": str(value)})

    walk(detail, "")
    first = (
        problems[0]
        if problems
        else {"field": "", "code": "invalid", "message": "Invalid input."}
    )
    field = first["field"] if first["field"] != "non_field_errors" else ""
    message = f"{field}: {first['message']}" if field else first["message"]
    return error_body(first["code"], message, field, errors=problems)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OrderError):
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status)
    if isinstance(exc, RegistryError):
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status)
    if isinstance(exc, LedgerError):
        return Response(error_body(exc.code, str(exc)), status=422)
    if isinstance(exc, ApiError):
        return Response(
            error_body(exc.error_code, str(exc.detail), exc.field),
            status=exc.status_code,
        )
    if isinstance(exc, OperationalError | InterfaceError) and is_session_lost(exc):
        # The database session went away under the request (nothing it wrote
        # committed unless a retried service says so): the client may retry.
        connection.close()
        unavailable = Response(
            error_body(
                "database_unavailable", "The database is unavailable; try again."
            ),
            status=503,
        )
        unavailable["Retry-After"] = "1"
        return unavailable
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_error_body(exc.detail)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(code, str(exc.detail))
    return response


class CursorPagination(pagination.CursorPagination):
    """Stable paging for tables that grow: newest first by id."""

    ordering = "-id"
    page_size_query_param = "limit"
    max_page_size = 1000

    def page_of(
        self, queryset: QuerySet[_M], request: Request, view: APIView
    ) -> list[_M]:
        """The page of ``queryset`` for a view that pages by hand.

        ``paginate_queryset`` answers None only when there is no page size, which
        the settings' ``PAGE_SIZE`` rules out: raises ``ImproperlyConfigured``.
        """
        page = self.paginate_queryset(queryset, request, view)
        if page is None:
            raise ImproperlyConfigured("REST_FRAMEWORK['PAGE_SIZE'] is not set")
        return page


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "limit"
    max_page_size = 1000
