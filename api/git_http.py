"""Git smart HTTP at `/git/<repository name>.git/<path>` (DESIGN, "Interfaces" 4).

`git clone`/`git fetch` need read permission on the repository, `git push` needs write
permission and an active user. Credentials: HTTP Basic with the API token as the password
(any user name; a token given as the user name with an empty password also works), or
`Authorization: Bearer|OAuth2 <token>`. Without valid credentials the answer is 401 with a
Basic challenge, which is what makes git send the credentials from the URL; an unreadable
repository looks missing (404); a push to a repository that is only readable is 403.

The work is done by `git http-backend`, run by `jobs.git.http_backend`; this view only
authenticates, authorizes and turns the CGI answer into a streamed response. These paths are
not under /arvados/v1, so errors are plain text, not the JSON envelope.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from api.authentication import client_ip, header_token
from jobs import git
from jobs.exceptions import InvalidRequest, NotFound, PermissionDenied
from jobs.models import ApiClientAuthorization
from jobs.services.tokens import scopes_allow, token_authenticate

# The route: a repository name (`<owner>/<name>` or `<name>`), `.git/`, then a path.
GIT_HTTP_ROUTE = r"^git/(?P<name>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)?)\.git/(?P<rest>.*)$"

REALM = 'Basic realm="crunch git"'


def _text(status: int, message: str) -> HttpResponse:
    return HttpResponse(f"{message}\n", status=status, content_type="text/plain; charset=utf-8")


def _unauthorized() -> HttpResponse:
    response = _text(401, "Authentication required: use your API token as the password")
    response["WWW-Authenticate"] = REALM
    return response


def _authenticate(request: HttpRequest) -> ApiClientAuthorization | None:
    token = header_token(request, allow_basic=True)
    if not token:
        return None
    return token_authenticate(presented=token, ip_address=client_ip(request))


class _AsyncBody:
    """Under ASGI, Django would read a synchronous iterator to the end before sending
    anything; this hands it the backend's output chunk by chunk instead."""

    def __init__(self, body: git.BackendBody) -> None:
        self._body = body

    def __aiter__(self) -> _AsyncBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await sync_to_async(self._next, thread_sensitive=False)()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def _next(self) -> bytes | None:
        return next(self._body, None)

    def close(self) -> None:
        self._body.close()


@csrf_exempt
def git_http(request: HttpRequest, name: str, rest: str) -> HttpResponseBase:
    service = request.GET.get("service")
    access = git.http_access(rest=rest, service=service)
    if access is None:
        return _text(404, "Not found")
    auth = _authenticate(request)
    if auth is None:
        return _unauthorized()
    if not scopes_allow(
        scopes=auth.scopes or [], method=request.method or "GET", path=request.path_info
    ):
        return _text(403, "Forbidden: this token's scopes do not allow git access")
    try:
        repo = git.http_repository(user=auth.user, name=name, access=access)
        backend = git.http_backend(
            uuid=repo.uuid,
            rest=rest,
            method=request.method or "GET",
            service=service,
            body=request,  # type: ignore[arg-type]  # file-like: read() streams the body
            content_type=request.META.get("CONTENT_TYPE", ""),
            content_length=request.META.get("CONTENT_LENGTH", ""),
            content_encoding=request.headers.get("Content-Encoding", ""),
            git_protocol=request.headers.get("Git-Protocol", ""),
            remote_user=auth.user.username or auth.user.uuid,
            remote_addr=client_ip(request) or "",
        )
    except NotFound as exc:
        return _text(404, exc.messages[0])
    except PermissionDenied as exc:
        return _text(403, exc.messages[0])
    except InvalidRequest as exc:
        return _text(405, exc.messages[0])
    content: Any = _AsyncBody(backend.body) if isinstance(request, ASGIRequest) else backend.body
    response = StreamingHttpResponse(content, status=backend.status)
    for header, value in backend.headers:
        response[header] = value
    return response
