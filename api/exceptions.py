"""The one place where errors become HTTP responses (spec §1.10).

Every error is `{"errors": [...plain messages...], "error_token": "<unix>+<8 hex>"}` with a
4xx status (or 503 when the block store cannot be reached: a retry may help there).
Unexpected exceptions are logged with their token and answered 422 with a plain message: a
500 would make the Arvados SDK retry for many minutes.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf

from jobs.exceptions import CrunchError

log = logging.getLogger("crunch.api")

STATUS_BY_CODE = {
    "invalid": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "length_required": 411,
    "too_large": 413,
    # The block store is unreachable: a 503 makes clients retry, which is what helps here.
    "unavailable": 503,
}

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE",
    "Access-Control-Allow-Headers": "Authorization",
    "Access-Control-Max-Age": "86486400",
}


def new_error_token() -> str:
    return f"{int(time.time())}+{secrets.token_hex(4)}"


def error_response(status: int, messages: list[str]) -> JsonResponse:
    token = new_error_token()
    if status >= 422:
        log.info("error %s (%s): %s", token, status, "; ".join(messages))
    response = JsonResponse({"errors": messages, "error_token": token}, status=status)
    for key, value in CORS_HEADERS.items():
        response[key] = value
    return response


def response_for(exc: BaseException) -> JsonResponse:
    """Map any exception to the Arvados error envelope."""
    if isinstance(exc, CrunchError):
        return error_response(STATUS_BY_CODE.get(exc.code, 422), exc.messages)
    if isinstance(exc, Http404 | drf.NotFound | drf.MethodNotAllowed):
        return error_response(404, ["Path not found"])
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return error_response(401, ["Not logged in"])
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return error_response(403, ["Forbidden"])
    if isinstance(exc, drf.ParseError):
        return error_response(422, [f"Could not parse the request body: {_detail(exc)}"])
    if isinstance(exc, drf.UnsupportedMediaType):
        return error_response(415, [f"Unsupported request body type: {_detail(exc)}"])
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, ["Request body too large"])
    if isinstance(exc, drf.APIException):
        status = exc.status_code if 400 <= exc.status_code < 500 else 422
        return error_response(status, [_detail(exc)])
    token = new_error_token()
    log.error("unexpected error %s", token, exc_info=exc)
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    response = JsonResponse(
        {"errors": [f"Internal error: {message} ({token})"], "error_token": token}, status=422
    )
    for key, value in CORS_HEADERS.items():
        response[key] = value
    return response


def _detail(exc: drf.APIException) -> str:
    detail: Any = exc.detail
    if isinstance(detail, list):
        return "; ".join(str(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {v}" for k, v in detail.items())
    return str(detail)


def exception_handler(exc: BaseException, context: dict[str, Any]) -> JsonResponse:
    """DRF's EXCEPTION_HANDLER hook."""
    return response_for(exc)
