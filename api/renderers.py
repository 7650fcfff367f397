"""JSON out, always (spec §1.1: JSON unless the client prefers HTML, which we do not serve)."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer


class ArvadosJSONRenderer(JSONRenderer):
    compact = True
    ensure_ascii = False


class AlwaysJSONNegotiation(BaseContentNegotiation):
    def select_parser(self, request: Any, parsers: list[Any]) -> Any:
        content_type = request.content_type or ""
        for parser in parsers:
            if content_type.split(";")[0].strip() == parser.media_type:
                return parser
        return None

    def select_renderer(self, request: Any, renderers: list[Any], format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type
