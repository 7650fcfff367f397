"""Request shaping shared by every `/arvados/v1/` and `/discovery/` path (spec §1.1).

- `.json` suffixes are stripped before routing (not from collection file paths, where they
  belong to a file's name);
- `POST` with `_method=GET` (query or form body) or `X-HTTP-Method-Override: GET` becomes a
  GET whose parameters are the query plus the form body (how the SDK sends long URLs);
- `OPTIONS` answers an empty 200; every response carries the CORS headers;
- a 404 from routing, or any exception that escaped a view, becomes the JSON error envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from django.http import HttpRequest, HttpResponse, QueryDict

from api.collection_files import COLLECTION_FILES_PATH_RE
from api.exceptions import CORS_HEADERS, error_response, response_for

API_PREFIXES = ("/arvados/v1", "/discovery/")


class ArvadosRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not path.startswith(API_PREFIXES):
            return self.get_response(request)
        if path.endswith(".json") and not COLLECTION_FILES_PATH_RE.match(path):
            request.path_info = path[: -len(".json")]
        if request.method == "OPTIONS":
            response = HttpResponse(b"", status=200)
        else:
            self._method_override(request)
            response = self.get_response(request)
            if response.status_code == 404 and not response.get("Content-Type", "").startswith(
                "application/json"
            ):
                response = error_response(404, ["Path not found"])
            elif response.status_code == 405:
                response = error_response(404, ["Path not found"])
        for key, value in CORS_HEADERS.items():
            response[key] = value
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path_info.startswith(API_PREFIXES):
            return response_for(exception)
        return None

    @staticmethod
    def _method_override(request: HttpRequest) -> None:
        if request.method != "POST":
            return
        header = request.headers.get("X-HTTP-Method-Override", "").upper()
        wants_get = header == "GET" or request.GET.get("_method", "").upper() == "GET"
        form_body = b""
        content_type = request.content_type or ""
        if content_type == "application/x-www-form-urlencoded":
            form_body = request.body
            if not wants_get:
                pairs = parse_qsl(form_body.decode("utf-8", "replace"), keep_blank_values=True)
                wants_get = any(k == "_method" and v.upper() == "GET" for k, v in pairs)
        if not wants_get:
            return
        merged = QueryDict(mutable=True)
        merged.update(request.GET)
        if form_body:
            merged.update(QueryDict(form_body, encoding="utf-8"))
        merged.pop("_method", None)
        request.method = "GET"
        request.META["REQUEST_METHOD"] = "GET"
        request.GET = merged
        # The body was the query; it must not be parsed again as request data.
        request._body = b""  # type: ignore[attr-defined]
        request.META["CONTENT_TYPE"] = ""
        request.META["CONTENT_LENGTH"] = "0"
