"""The Google-style discovery document at `/discovery/v1/apis/arvados/v1/rest`.

The real Arvados SDK builds its whole client from this document at runtime
(`spec/arvados-sdk-wire.md`): every resource, method and parameter it can call is the one
described here, and a parameter's declared `type` decides its wire encoding. So the document
is *generated*, never written by hand:

- each registered viewset (`RESOURCE_VIEWSETS`) becomes one `ResourceDescription`: its fields
  come from the model's `all_api_fields()` with JSON types derived from the Django field types
  (or, for computed attributes, from their annotations), and its methods are the five standard
  ones plus the viewset's `EXTRA_METHODS`;
- an `EXTRA_METHODS` entry describes one DRF action of the viewset (its `path`/`httpMethod`
  default to the action's route), or, when named after a standard method (`create`), adds
  parameters to / overrides keys of that method. `"response": None` means "no `response`
  key": the SDK then returns the raw bytes (log streams);
- an `EXTRA_METHODS` entry with its own `path` and `httpMethod` describes a method whose
  action is not implemented yet (jobs' `log_tail_follow`); its route answers 404 until then;
- a viewset's `EXTRA_SCHEMAS` are models its extra methods return that are not resources of
  their own (jobs' executions): each gets a `<Kind>` and a `<Kind>List` schema, typed like a
  resource's attributes.

Not advertised on purpose: `configs` (we do not serve `/arvados/v1/config`, and the SDK fetches
it inside `arvados.api()` whenever it is advertised, failing the build on a 404),
`websocketUrl` (no websocket: the SDK falls back to polling),
and `features: ["dataWrapper"]` (it would wrap every body in `{"data": ...}`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import parse_etags
from django.views.decorators.http import require_safe

from api.urls_util import external_base_url
from jobs.uuids import infix_for

SERVICE_PATH = "arvados/v1/"
# Bump when the document's shape changes (YYYYMMDD, as Arvados does).
REVISION = "20250101"
# Arvados' defaults; clients other than the Python SDK read them. The SDK asks Keep for
# defaultCollectionReplication copies of each block: Crunch stores one (a file, or an S3
# object), and says so.
DEFAULT_COLLECTION_REPLICATION = 1
DEFAULT_TRASH_LIFETIME = 14 * 24 * 3600
DOCKER_IMAGE_FORMATS = ["v2"]

# The cache policy. httplib2 (the SDK's HTTP layer) caches the document on disk per URL and
# honours Cache-Control. The document embeds rootUrl, taken from the Host header, and lists
# the resources of *this* deployment: a long max-age (Arvados sends 86400) would let a client
# keep using a stale rootUrl when a port or CRUNCH_EXTERNAL_URL changes (spec §6), or keep
# missing a resource added by an upgrade, for a day. `no-cache` lets httplib2 store the
# document but makes it revalidate every time with If-None-Match; we answer 304 while the
# ETag (a digest of the body) is unchanged. Always correct, and cheap.
CACHE_CONTROL = "no-cache"

# --- JSON types -----------------------------------------------------------------------------

STRING: dict[str, Any] = {"type": "string"}
DATETIME: dict[str, Any] = {"type": "string", "format": "date-time"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object"}
ARRAY_OF_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

# Django field classes and their JSON types; the first match wins (a DateTimeField is also a
# DateField).
_FIELD_SCHEMAS: tuple[tuple[type[models.Field], dict[str, Any]], ...] = (
    (models.BooleanField, BOOLEAN),
    (models.DateTimeField, DATETIME),
    (models.DateField, {"type": "string", "format": "date"}),
    (models.IntegerField, INTEGER),  # also BigInteger, Positive*, AutoField, BigAutoField
    (models.FloatField, NUMBER),
    (models.DecimalField, NUMBER),
    (models.CharField, STRING),
    (models.TextField, STRING),
    (models.UUIDField, STRING),
)

# Attributes every response carries besides the model's API fields.
ENVELOPE_PROPERTIES: dict[str, dict[str, Any]] = {
    "href": STRING,
    "kind": STRING,
    "etag": STRING,
}


def field_schema(
    model: type[models.Model], name: str, hash_fields: frozenset[str]
) -> dict[str, Any] | None:
    """The JSON type of one API attribute, or None when it cannot be derived.

    Concrete fields by their Django type (a JSONField is an object when the model lists it
    in HASH_FIELDS, an array when it defaults to a list or is in ARRAY_FIELDS); foreign keys
    by their `<name>_id` attribute and the target's key; computed attributes (properties,
    class attributes) by their type annotation; finally the Arvados naming convention for
    attributes computed by a viewset (`extra_attributes`): `*_url`/`*_uuid` are strings,
    `*_urls`/`*_uuids` lists of strings. A resource that is computed rather than stored
    (keep services) has no Django fields: its attributes are typed by annotation.
    """
    meta = getattr(model, "_meta", None)
    for concrete in meta.concrete_fields if meta is not None else ():
        if name not in (concrete.name, concrete.attname):
            continue
        if concrete.is_relation and name == concrete.attname:
            target = getattr(concrete, "target_field", None)
            related = concrete.related_model
            if target is None or not isinstance(related, type):
                return None
            return field_schema(related, target.name, frozenset())
        if isinstance(concrete, models.JSONField):
            if name in hash_fields:
                return dict(OBJECT)
            if concrete.default is list or name in getattr(model, "ARRAY_FIELDS", ()):
                return dict(ARRAY_OF_STRINGS)
            return dict(OBJECT)
        for django_type, schema in _FIELD_SCHEMAS:
            if isinstance(concrete, django_type):
                return dict(schema)
        return None
    annotated = _annotation_schema(_annotation(model, name))
    if annotated is not None:
        return annotated
    if name.endswith(("_urls", "_uuids")):
        return dict(ARRAY_OF_STRINGS)
    if name.endswith(("_url", "_uuid")):
        return dict(STRING)
    return None


def _annotation(model: type, name: str) -> Any:
    attr = inspect.getattr_static(model, name, None)
    if isinstance(attr, property) and attr.fget is not None:
        try:
            return typing.get_type_hints(attr.fget).get("return")
        except Exception:
            return None
    for klass in model.__mro__:
        try:
            hints = inspect.get_annotations(klass, eval_str=True)
        except Exception:
            continue
        if name in hints:
            return hints[name]
    return None


def _annotation_schema(hint: Any) -> dict[str, Any] | None:
    if hint is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        candidates = [a for a in typing.get_args(hint) if a is not type(None)]
        return _annotation_schema(candidates[0]) if len(candidates) == 1 else None
    if hint is bool:
        return dict(BOOLEAN)
    if hint is int:
        return dict(INTEGER)
    if hint is float:
        return dict(NUMBER)
    if hint is str:
        return dict(STRING)
    if hint is dt.datetime:
        return dict(DATETIME)
    if hint is dict or origin is dict:
        return dict(OBJECT)
    if hint is list or origin in (list, tuple):
        args = typing.get_args(hint)
        item = _annotation_schema(args[0]) if args else None
        return {"type": "array", "items": item or dict(STRING)}
    return None


# --- method parameters ----------------------------------------------------------------------


def query_parameter(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    """A query parameter of the discovery document."""
    return {**schema, "description": description, "location": "query", **extra}


UUID_PARAMETER = {
    "type": "string",
    "description": "The UUID of the object.",
    "required": True,
    "location": "path",
}
SELECT_PARAMETER = query_parameter(
    {"type": "array"}, "Attributes of the object to return in the response."
)
LIST_PARAMETERS: dict[str, dict[str, Any]] = {
    "filters": query_parameter(
        {"type": "array"}, "Conditions, each [attribute, operator, operand]."
    ),
    "where": query_parameter(OBJECT, "Legacy conditions, an object of attribute: value."),
    "order": query_parameter(
        {"type": "array"}, 'Attributes to sort by, each "name" or "name asc|desc".'
    ),
    "select": SELECT_PARAMETER,
    "distinct": query_parameter(BOOLEAN, "Return each distinct object once.", default="false"),
    "limit": query_parameter(INTEGER, "Maximum number of items to return.", default="100"),
    "offset": query_parameter(INTEGER, "Number of items to skip first.", default="0"),
    "count": query_parameter(
        STRING, '"exact" to include items_available (default), "none" to omit it.', default="exact"
    ),
    "cluster_id": query_parameter(
        STRING, "List objects on a remote federated cluster instead of the current one."
    ),
    "bypass_federation": query_parameter(
        BOOLEAN, "Bypass federation behavior, list items from local instance database only."
    ),
}
CREATE_PARAMETERS: dict[str, dict[str, Any]] = {
    "select": SELECT_PARAMETER,
    "ensure_unique_name": query_parameter(
        BOOLEAN, "Adjust the name to avoid a name collision.", default="false"
    ),
    "cluster_id": query_parameter(STRING, "Create the object on a remote federated cluster."),
}
GLOBAL_PARAMETERS: dict[str, dict[str, Any]] = {
    "alt": query_parameter(STRING, "Data format for the response.", default="json"),
    "fields": query_parameter(
        STRING, "Selector specifying which fields to include in a partial response."
    ),
    "key": query_parameter(
        STRING,
        "API key. Your API key identifies your project and provides you "
        "with API access, quota, and reports.",
    ),
    "oauth_token": query_parameter(STRING, "OAuth 2.0 token for the current user."),
}
STANDARD_METHODS = ("get", "list", "create", "update", "delete")
_TEMPLATE_VAR_RE = re.compile(r"{([^}/]+)}")


# --- resources ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceDescription:
    """What the document says about one resource.

    `extra_methods` has the shape of a viewset's `EXTRA_METHODS`, with `path` and
    `httpMethod` filled in for every method that is not a standard one.
    """

    resource: str  # "links"
    singular: str  # "link"
    kind: str  # "Link": the schema names are <kind> and <kind>List
    properties: dict[str, dict[str, Any]]
    extra_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Other objects the methods return: kind -> properties.
    extra_schemas: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def methods(self) -> dict[str, dict[str, Any]]:
        methods = _standard_methods(self)
        for name, spec in self.extra_methods.items():
            if name in methods:
                methods[name] = _merge(methods[name], spec)
            else:
                methods[name] = _method(self, name, spec)
        return methods

    def schemas(self) -> dict[str, dict[str, Any]]:
        schemas = object_schemas(
            self.kind, f"Arvados {self.singular.replace('_', ' ')}.", self.properties
        )
        for kind, properties in self.extra_schemas.items():
            schemas |= object_schemas(kind, f"{kind} (in {self.resource} methods).", properties)
        return schemas


def object_schemas(
    kind: str, description: str, properties: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The `<kind>` and `<kind>List` schemas of one kind of object."""
    list_kind = f"arvados#{kind[0].lower()}{kind[1:]}List"
    return {
        kind: {
            "id": kind,
            "description": description,
            "type": "object",
            "uuidPrefix": infix_for(kind),
            "properties": properties,
        },
        f"{kind}List": {
            "id": f"{kind}List",
            "description": f"A list of {kind} objects.",
            "type": "object",
            "properties": {
                "kind": {
                    **STRING,
                    "description": f"Object type. Always {list_kind}.",
                    "default": list_kind,
                },
                "etag": {**STRING, "description": "List version."},
                "self_link": STRING,
                "offset": INTEGER,
                "limit": INTEGER,
                "items_available": {
                    **INTEGER,
                    "description": "The total number of matching objects (absent with count=none).",
                },
                "items": {
                    "type": "array",
                    "description": f"The list of {kind}s.",
                    "items": {"$ref": kind},
                },
            },
        },
    }


def describe_viewset(viewset: Any) -> ResourceDescription:
    """A registered viewset's description: model fields and EXTRA_METHODS + DRF actions."""
    model = viewset.model
    hash_fields = frozenset(getattr(model, "HASH_FIELDS", frozenset()))
    properties = {k: dict(v) for k, v in ENVELOPE_PROPERTIES.items()}
    for name in model.all_api_fields():
        properties[name] = field_schema(model, name, hash_fields) or dict(STRING)
    routes = {
        extra.url_path: (
            next(iter(extra.mapping)).upper(),
            f"{viewset.resource}/{{uuid}}/{extra.url_path}"
            if extra.detail
            else f"{viewset.resource}/{extra.url_path}",
        )
        for extra in viewset.get_extra_actions()
    }
    extra_methods: dict[str, dict[str, Any]] = {}
    for name, spec in viewset.EXTRA_METHODS.items():
        spec = dict(spec)
        if name in routes:
            spec.setdefault("httpMethod", routes[name][0])
            spec.setdefault("path", routes[name][1])
            doc = inspect.getdoc(getattr(viewset, name))
            if doc:
                spec.setdefault("description", doc.splitlines()[0])
        elif name not in STANDARD_METHODS and not ("path" in spec and "httpMethod" in spec):
            raise ImproperlyConfigured(
                f"{viewset.__name__}.EXTRA_METHODS[{name!r}] names no action of the viewset"
            )
        extra_methods[name] = spec
    extra_schemas = {}
    for other in viewset.EXTRA_SCHEMAS:
        other_hash_fields = frozenset(getattr(other, "HASH_FIELDS", frozenset()))
        extra_schemas[other.class_name()] = {
            "kind": dict(STRING),
            "etag": dict(STRING),
            **{
                name: field_schema(other, name, other_hash_fields) or dict(STRING)
                for name in other.all_api_fields()
            },
        }
    return ResourceDescription(
        resource=viewset.resource,
        singular=viewset.singular,
        kind=model.class_name(),
        properties=properties,
        extra_methods=extra_methods,
        extra_schemas=extra_schemas,
    )


def _standard_methods(desc: ResourceDescription) -> dict[str, dict[str, Any]]:
    r, kind = desc.resource, desc.kind
    request = {"required": True, "properties": {desc.singular: {"$ref": kind}}}
    uuid_only = {"uuid": dict(UUID_PARAMETER)}

    def method(
        name: str, http: str, path: str, description: str, parameters: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        return {
            "id": f"arvados.{r}.{name}",
            "path": path,
            "httpMethod": http,
            "description": description,
            "parameters": {k: dict(v) for k, v in parameters.items()},
            "parameterOrder": ["uuid"] if "{uuid}" in path else [],
            "response": {"$ref": kind},
            "scopes": _SCOPES,
            **extra,
        }

    return {
        "get": method(
            "get",
            "GET",
            f"{r}/{{uuid}}",
            f"Get a {kind}'s metadata by UUID.",
            {**uuid_only, "select": SELECT_PARAMETER},
        ),
        "list": method(
            "list",
            "GET",
            r,
            f"Retrieve a {kind}List.",
            LIST_PARAMETERS,
            response={"$ref": f"{kind}List"},
        ),
        "create": method(
            "create", "POST", r, f"Create a new {kind}.", CREATE_PARAMETERS, request=request
        ),
        "update": method(
            "update",
            "PUT",
            f"{r}/{{uuid}}",
            f"Update attributes of an existing {kind}.",
            {**uuid_only, "select": SELECT_PARAMETER},
            request=request,
        ),
        "delete": method(
            "delete", "DELETE", f"{r}/{{uuid}}", f"Delete an existing {kind}.", uuid_only
        ),
    }


_SCOPES = ["https://api.arvados.org/auth/arvados"]


def _parameters(path: str, declared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Declared parameters with `type` and `location` filled in; every `{var}` of the path
    template becomes a required path parameter (the SDK would drop a query parameter that
    has no `location`)."""
    params: dict[str, dict[str, Any]] = {}
    for var in _TEMPLATE_VAR_RE.findall(path):
        params[var] = (
            dict(UUID_PARAMETER)
            if var == "uuid"
            else {"type": "string", "required": True, "location": "path"}
        )
    for name, spec in declared.items():
        spec = {**spec}
        spec.setdefault("type", "string")
        spec["location"] = "path" if name in params else spec.get("location", "query")
        if name in params:
            spec["required"] = True
        params[name] = {**params.get(name, {}), **spec}
    return params


def _method(desc: ResourceDescription, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    path, http = spec["path"], spec["httpMethod"]
    parameters = _parameters(path, spec.get("parameters", {}))
    out: dict[str, Any] = {
        "id": f"arvados.{desc.resource}.{name}",
        "path": path,
        "httpMethod": http.upper(),
        "description": spec.get("description", f"{name} ({desc.resource})"),
        "parameters": parameters,
        "parameterOrder": [p for p, v in parameters.items() if v["location"] == "path"],
        "scopes": _SCOPES,
    }
    if "request" in spec:
        out["request"] = spec["request"]
    response = spec.get("response", {"$ref": desc.kind})
    if response is not None:
        out["response"] = response
    return out


def _merge(standard: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A standard method with a resource's additions: more parameters, other keys replaced."""
    merged = {**standard, **{k: v for k, v in spec.items() if k != "parameters"}}
    merged["parameters"] = _parameters(
        merged["path"], {**standard["parameters"], **spec.get("parameters", {})}
    )
    if merged.get("response", "") is None:
        del merged["response"]
    return merged


# --- resources without a viewset yet --------------------------------------------------------


def resource_descriptions() -> list[ResourceDescription]:
    """Every resource of the document, from the registered viewsets."""
    from api.viewsets.resources import RESOURCE_VIEWSETS

    return [describe_viewset(v) for v in RESOURCE_VIEWSETS]


# --- the document and its view --------------------------------------------------------------


def root_url(request: HttpRequest) -> str:
    return external_base_url(request).rstrip("/") + "/"


def discovery_document(request: HttpRequest) -> dict[str, Any]:
    root = root_url(request)
    resources: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for desc in resource_descriptions():
        resources[desc.resource] = {"methods": desc.methods()}
        schemas.update(desc.schemas())
    return {
        "kind": "discovery#restDescription",
        "discoveryVersion": "v1",
        "id": "arvados:v1",
        "name": "arvados",
        "version": "v1",
        "revision": REVISION,
        "title": "Arvados API",
        "description": "The API to interact with Arvados (Crunch: jobs, repositories, "
        "collections, links).",
        "documentationLink": "https://doc.arvados.org/api/index.html",
        "protocol": "rest",
        "rootUrl": root,
        "servicePath": SERVICE_PATH,
        "batchPath": "batch",
        "baseUrl": root + SERVICE_PATH,
        "basePath": urlsplit(root).path + SERVICE_PATH,
        "uuidPrefix": settings.CRUNCH_UUID_PREFIX,
        "maxRequestSize": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        "maxItemsPerResponse": settings.CRUNCH_MAX_ITEMS_PER_RESPONSE,
        "defaultCollectionReplication": DEFAULT_COLLECTION_REPLICATION,
        "blobSignatureTtl": settings.CRUNCH_BLOB_SIGNATURE_TTL,
        "defaultTrashLifetime": DEFAULT_TRASH_LIFETIME,
        "dockerImageFormats": DOCKER_IMAGE_FORMATS,
        "parameters": {k: dict(v) for k, v in GLOBAL_PARAMETERS.items()},
        "auth": {"oauth2": {"scopes": {_SCOPES[0]: {"description": "View and manage objects"}}}},
        "schemas": schemas,
        "resources": resources,
    }


@require_safe
def discovery_view(request: HttpRequest) -> HttpResponse:
    """Public: the SDK sends its token here too, but none is needed, checked or logged."""
    body = json.dumps(discovery_document(request), separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if etag in parse_etags(request.headers.get("If-None-Match", "")):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    response["Cache-Control"] = CACHE_CONTROL
    return response
