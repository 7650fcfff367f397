"""Finding the caller's token (spec §1.2) and turning it into an Actor."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from django.http import HttpRequest

from jobs.exceptions import Forbidden, NotLoggedIn
from jobs.services.objects import Actor
from jobs.services.tokens import scopes_allow, token_authenticate

_AUTH_HEADER_RE = re.compile(r"^(?:OAuth2|Bearer)\s+(\S+)\s*$", re.IGNORECASE)
_BASIC_HEADER_RE = re.compile(r"^Basic\s+(\S+)\s*$", re.IGNORECASE)


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer|OAuth2 <token>` header's value."""
    match = _AUTH_HEADER_RE.match(header)
    return match.group(1) if match else None


def header_token(request: HttpRequest, *, allow_basic: bool = False) -> str | None:
    """The token in `Authorization: Bearer|OAuth2 <token>`; with `allow_basic` (git over
    HTTP), also the Basic password, or the Basic user name when the password is empty."""
    header = request.headers.get("Authorization", "")
    token = bearer_token(header)
    if token:
        return token
    match = _BASIC_HEADER_RE.match(header) if allow_basic else None
    if not match:
        return None
    try:
        decoded = base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, _sep, password = decoded.partition(":")
    return password or username or None


def presented_token(request: HttpRequest, params: dict[str, Any]) -> str | None:
    for name in ("api_token", "oauth_token"):
        value = params.get(name)
        if isinstance(value, str) and value:
            return value
    return header_token(request)


def client_ip(request: HttpRequest) -> str | None:
    return request.headers.get("X-Real-IP") or request.META.get("REMOTE_ADDR")


def authenticate(
    request: HttpRequest, params: dict[str, Any], *, required: bool = True
) -> Actor | None:
    token = presented_token(request, params)
    auth = token_authenticate(presented=token, ip_address=client_ip(request)) if token else None
    if auth is None:
        if required:
            raise NotLoggedIn()
        return None
    if not scopes_allow(
        scopes=auth.scopes or [], method=request.method or "GET", path=request.path_info
    ):
        raise Forbidden()
    return Actor(user=auth.user, auth=auth)


def reader_actors(request: HttpRequest, params: dict[str, Any]) -> list[Actor]:
    """Extra read users from `reader_tokens` (GET only, fewer than 100, spec §1.2)."""
    raw = params.get("reader_tokens")
    if raw is None or request.method != "GET":
        return []
    from api.params import parse_json_param

    tokens = parse_json_param(raw, "reader_tokens", list)
    if len(tokens) >= 100:
        from jobs.exceptions import InvalidRequest

        raise InvalidRequest("Too many reader tokens")
    actors = []
    for token in tokens:
        if not isinstance(token, str):
            continue
        auth = token_authenticate(presented=token, ip_address=client_ip(request))
        if auth is not None and scopes_allow(
            scopes=auth.scopes or [], method="GET", path=request.path_info
        ):
            actors.append(Actor(user=auth.user, auth=auth))
    return actors
