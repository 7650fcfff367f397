"""The discovery document: complete, self-consistent, and what the real SDK needs
(spec/arvados-sdk-wire.md §2). Generated from the registered viewsets, so these tests check
completeness against them rather than a fixed list."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import Resolver404, resolve

from api.discovery import STANDARD_METHODS, field_schema
from api.viewsets.resources import RESOURCE_VIEWSETS

URL = "/discovery/v1/apis/arvados/v1/rest"
SAMPLE_UUID = "zzzzz-aaaaa-012345678901234"
ACTION_FOR_STANDARD = {
    "get": "retrieve",
    "list": "list",
    "create": "create",
    "update": "update",
    "delete": "destroy",
}


@pytest.fixture
def doc(client: Any) -> dict[str, Any]:
    response = client.get(URL)
    assert response.status_code == 200
    return json.loads(response.content)


def all_methods(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for resource, desc in doc["resources"].items():
        for name, method in desc["methods"].items():
            yield resource, name, method


def walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every dict inside `node`, with a readable location."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}[{i}]")


# --- serving ------------------------------------------------------------------------------


def test_public_without_a_token(client: Any) -> None:
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Access-Control-Allow-Origin"] == "*"


def test_bad_token_is_ignored_not_rejected(client: Any) -> None:
    response = client.get(URL, HTTP_AUTHORIZATION="Bearer not-a-real-token")
    assert response.status_code == 200


def test_token_is_never_logged(client: Any, active: Any, caplog: Any) -> None:
    _, token = active
    with caplog.at_level(logging.DEBUG):
        response = client.get(
            URL, HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_X_REQUEST_ID="req-0123456789abcdefghij"
        )
    assert response.status_code == 200
    assert token not in caplog.text
    assert token not in response.content.decode()


def test_json_suffix_and_unknown_api(client: Any) -> None:
    assert client.get(URL + ".json").status_code == 200
    response = client.get("/discovery/v1/apis/other/v1/rest")
    assert response.status_code == 404
    assert json.loads(response.content)["errors"] == ["Path not found"]


def test_not_a_write_endpoint(client: Any) -> None:
    response = client.post(URL, data="{}", content_type="application/json")
    assert response.status_code == 404


def test_cache_policy_revalidates_with_etag(client: Any) -> None:
    first = client.get(URL)
    # Short-lived or revalidated: never the day-long max-age that pins a stale rootUrl.
    assert "no-cache" in first["Cache-Control"] or "no-store" in first["Cache-Control"]
    assert "86400" not in first["Cache-Control"]
    etag = first["ETag"]
    again = client.get(URL, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again["ETag"] == etag
    moved = client.get(URL, HTTP_IF_NONE_MATCH=etag, HTTP_HOST="elsewhere:9999")
    assert moved.status_code == 200
    assert json.loads(moved.content)["rootUrl"] == "http://elsewhere:9999/"


# --- top level -------------------------------------------------------------------------------


def test_identification_and_service_keys(doc: dict[str, Any], settings: Any) -> None:
    assert doc["kind"] == "discovery#restDescription"
    assert doc["discoveryVersion"] == "v1"
    assert doc["id"] == "arvados:v1"
    assert (doc["name"], doc["version"], doc["protocol"]) == ("arvados", "v1", "rest")
    assert re.fullmatch(r"\d{8}", doc["revision"])
    assert doc["rootUrl"] == "http://testserver/"
    assert doc["servicePath"] == "arvados/v1/"
    assert doc["batchPath"] == "batch"
    assert doc["baseUrl"] == "http://testserver/arvados/v1/"
    assert doc["basePath"] == "/arvados/v1/"
    assert doc["uuidPrefix"] == settings.CRUNCH_UUID_PREFIX
    assert doc["maxRequestSize"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert doc["maxItemsPerResponse"] == settings.CRUNCH_MAX_ITEMS_PER_RESPONSE
    for key in ("defaultCollectionReplication", "blobSignatureTtl", "defaultTrashLifetime"):
        assert isinstance(doc[key], int) and doc[key] > 0


def test_what_must_not_be_there(doc: dict[str, Any]) -> None:
    assert "dataWrapper" not in doc.get("features", [])
    assert "configs" not in doc["resources"]  # the SDK would fetch /config in arvados.api()
    assert "mtlsRootUrl" not in doc


def test_root_url_from_the_host_header(client: Any) -> None:
    doc = json.loads(client.get(URL, HTTP_HOST="127.0.0.1:8123").content)
    assert doc["rootUrl"] == "http://127.0.0.1:8123/"
    assert doc["baseUrl"] == "http://127.0.0.1:8123/arvados/v1/"


def test_root_url_from_external_url(client: Any, settings: Any) -> None:
    settings.CRUNCH_EXTERNAL_URL = "https://crunch.example.org/prefix"
    doc = json.loads(client.get(URL, HTTP_HOST="127.0.0.1:8123").content)
    assert doc["rootUrl"] == "https://crunch.example.org/prefix/"
    assert doc["baseUrl"] == "https://crunch.example.org/prefix/arvados/v1/"
    assert doc["basePath"] == "/prefix/arvados/v1/"


def test_global_parameters(doc: dict[str, Any]) -> None:
    assert set(doc["parameters"]) == {"alt", "fields", "key", "oauth_token"}
    for name, param in doc["parameters"].items():
        assert param["location"] == "query", name
        assert not param.get("required"), name


# --- completeness ----------------------------------------------------------------------------


@pytest.mark.parametrize("viewset", RESOURCE_VIEWSETS, ids=lambda v: v.resource)
def test_every_viewset_and_method_is_described(doc: dict[str, Any], viewset: Any) -> None:
    methods = doc["resources"][viewset.resource]["methods"]
    assert set(STANDARD_METHODS) <= set(methods)
    assert set(viewset.EXTRA_METHODS) <= set(methods)
    # Every DRF action of the viewset is a described method, and vice versa.
    actions = {a.url_path for a in viewset.get_extra_actions()}
    assert actions <= set(viewset.EXTRA_METHODS), "add the action to EXTRA_METHODS"
    assert set(methods) == set(STANDARD_METHODS) | set(viewset.EXTRA_METHODS)
    for name in set(viewset.EXTRA_METHODS) - set(STANDARD_METHODS) - actions:
        # served outside the viewset: it must say where it lives
        assert {"path", "httpMethod"} <= set(viewset.EXTRA_METHODS[name]), name


def outside_methods(viewset: Any) -> set[str]:
    """EXTRA_METHODS served by a view of their own (jobs.log_tail_follow streams)."""
    actions = {a.url_path for a in viewset.get_extra_actions()}
    return set(viewset.EXTRA_METHODS) - set(STANDARD_METHODS) - actions


def test_jobs_methods(doc: dict[str, Any]) -> None:
    methods = doc["resources"]["jobs"]["methods"]
    assert set(methods) >= {
        *STANDARD_METHODS,
        "cancel",
        "lock",
        "queue",
        "queue_size",
        "log_tail_follow",
        "executions",
    }
    expect = {
        "cancel": ("POST", "jobs/{uuid}/cancel"),
        "lock": ("POST", "jobs/{uuid}/lock"),
        "queue": ("GET", "jobs/queue"),
        "queue_size": ("GET", "jobs/queue_size"),
        "log_tail_follow": ("GET", "jobs/{uuid}/log_tail_follow"),
    }
    for name, (http, path) in expect.items():
        assert (methods[name]["httpMethod"], methods[name]["path"]) == (http, path)
    create = methods["create"]["parameters"]
    assert create["find_or_create"]["type"] == "boolean"
    assert create["filters"]["type"] == "array"
    assert create["minimum_script_version"]["type"] == "string"
    assert create["exclude_script_versions"]["type"] == "array"
    assert create["ensure_unique_name"]["type"] == "boolean"
    assert create["select"]["type"] == "array"
    assert create["explain"]["type"] == "boolean"
    assert methods["cancel"]["parameters"]["cascade"]["type"] == "boolean"
    assert set(methods["queue"]["parameters"]) == set(methods["list"]["parameters"])
    assert methods["queue"]["response"] == {"$ref": "JobList"}
    executions = methods["executions"]
    assert (executions["httpMethod"], executions["path"]) == ("GET", "jobs/{uuid}/executions")
    assert executions["response"] == {"$ref": "ExecutionList"}
    execution = doc["schemas"]["Execution"]["properties"]
    assert execution["attempt"]["type"] == execution["exit_code"]["type"] == "integer"
    assert execution["started_at"] == {"type": "string", "format": "date-time"}
    assert {"job_uuid", "node_uuid", "hostname", "state", "log_seq", "reason"} <= set(execution)
    follow = methods["log_tail_follow"]
    assert "response" not in follow  # the SDK returns raw bytes
    assert follow["parameters"]["buffer_size"]["type"] == "integer"
    props = doc["schemas"]["Job"]["properties"]
    assert props["script_parameters"]["type"] == "object"
    assert props["priority"]["type"] == "integer"
    assert props["node_uuids"] == {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize("viewset", RESOURCE_VIEWSETS, ids=lambda v: v.resource)
def test_every_api_field_has_a_derived_type(doc: dict[str, Any], viewset: Any) -> None:
    model = viewset.model
    props = doc["schemas"][model.class_name()]["properties"]
    for name in model.all_api_fields():
        assert field_schema(model, name, frozenset(model.HASH_FIELDS)) is not None, (
            f"{model.__name__}.{name}: no JSON type can be derived"
        )
        assert name in props
    for name in model.HASH_FIELDS:
        assert props[name]["type"] == "object"


def test_field_types_follow_django_types(doc: dict[str, Any]) -> None:
    coll = doc["schemas"]["Collection"]["properties"]
    assert coll["file_count"]["type"] == "integer"
    assert coll["file_size_total"]["type"] == "integer"
    assert coll["is_trashed"]["type"] == "boolean"
    assert coll["created_at"] == {"type": "string", "format": "date-time"}
    assert coll["replication_confirmed"]["type"] == "integer"  # a property, by annotation
    assert coll["manifest_text"]["type"] == "string"
    token = doc["schemas"]["ApiClientAuthorization"]["properties"]
    assert token["scopes"] == {"type": "array", "items": {"type": "string"}}
    assert token["user_id"]["type"] == "integer"
    repo = doc["schemas"]["Repository"]["properties"]
    assert repo["clone_urls"]["type"] == "array"
    user = doc["schemas"]["User"]["properties"]
    assert user["is_admin"]["type"] == "boolean"
    assert user["writable_by"]["type"] == "array"


# --- consistency -----------------------------------------------------------------------------


def test_every_method_is_complete(doc: dict[str, Any]) -> None:
    for resource, name, method in all_methods(doc):
        where = f"{resource}.{name}"
        assert method["id"] == f"arvados.{resource}.{name}", where
        assert method["httpMethod"] in ("GET", "POST", "PUT", "PATCH", "DELETE"), where
        assert not method["path"].startswith("/"), where
        assert method["path"].split("/")[0] == resource, where
        template_vars = set(re.findall(r"{([^}]+)}", method["path"]))
        for param_name, param in method["parameters"].items():
            assert param["location"] in ("query", "path"), (where, param_name)
            assert "type" in param, (where, param_name)
            assert not param.get("repeated"), (where, param_name)
            if param["location"] == "path":
                assert param_name in template_vars and param["required"], (where, param_name)
            else:
                assert not param.get("required"), (where, param_name)
        assert template_vars <= set(method["parameters"]), where
        if (resource, name) != ("jobs", "log_tail_follow"):
            assert "response" in method, where


@pytest.mark.parametrize("resource", [v.resource for v in RESOURCE_VIEWSETS])
def test_standard_methods(doc: dict[str, Any], resource: str) -> None:
    methods = doc["resources"][resource]["methods"]
    singular = {v.resource: v.singular for v in RESOURCE_VIEWSETS}.get(resource, "job")
    kind = methods["get"]["response"]["$ref"]
    assert kind in doc["schemas"]
    expected_paths = {
        "get": ("GET", f"{resource}/{{uuid}}"),
        "list": ("GET", resource),
        "create": ("POST", resource),
        "update": ("PUT", f"{resource}/{{uuid}}"),
        "delete": ("DELETE", f"{resource}/{{uuid}}"),
    }
    for name, (http, path) in expected_paths.items():
        assert (methods[name]["httpMethod"], methods[name]["path"]) == (http, path), name
    params = methods["list"]["parameters"]
    types = {k: v["type"] for k, v in params.items()}
    assert types == {
        "filters": "array",
        "where": "object",
        "order": "array",
        "select": "array",
        "distinct": "boolean",
        "limit": "integer",
        "offset": "integer",
        "count": "string",
        "cluster_id": "string",
        "bypass_federation": "boolean",
    }
    assert methods["list"]["response"] == {"$ref": f"{kind}List"}
    assert methods["get"]["parameters"]["uuid"] == {
        **methods["get"]["parameters"]["uuid"],
        "required": True,
        "location": "path",
    }
    assert methods["get"]["parameters"]["select"]["type"] == "array"
    assert methods["create"]["parameters"]["ensure_unique_name"]["type"] == "boolean"
    for name in ("create", "update"):
        assert methods[name]["request"] == {
            "required": True,
            "properties": {singular: {"$ref": kind}},
        }, name
    for name in ("get", "create", "update", "delete"):
        assert methods[name]["response"] == {"$ref": kind}, name
    for name in ("get", "list", "delete"):
        assert "request" not in methods[name], name


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    schemas = doc["schemas"]
    refs = [(where, node["$ref"]) for where, node in walk(doc) if "$ref" in node]
    assert refs
    missing = [(where, ref) for where, ref in refs if ref not in schemas]
    assert not missing


def test_every_array_has_items(doc: dict[str, Any]) -> None:
    for where, node in walk(doc["schemas"]):
        if node.get("type") == "array":
            assert "items" in node, where


def test_schema_shapes(doc: dict[str, Any]) -> None:
    for name, schema in doc["schemas"].items():
        assert schema["id"] == name
        assert schema["type"] == "object"
        if name.endswith("List"):
            assert schema["properties"]["items"] == {
                **schema["properties"]["items"],
                "type": "array",
                "items": {"$ref": name[: -len("List")]},
            }
        else:
            assert f"{name}List" in doc["schemas"]
            # Resources carry the common attributes; objects only returned by a resource's
            # methods (a job's executions) are not owned: uuid, kind and etag.
            resource = name in {v.model.class_name() for v in RESOURCE_VIEWSETS}
            common = ("uuid", "owner_uuid", "created_at", "modified_at") if resource else ("uuid",)
            for attribute in (*common, "kind", "etag"):
                assert attribute in schema["properties"], (name, attribute)


def _resolve_api_path(path: str) -> Any:
    return resolve("/arvados/v1/" + path.replace("{uuid}", SAMPLE_UUID))


@pytest.mark.parametrize("viewset", RESOURCE_VIEWSETS, ids=lambda v: v.resource)
def test_paths_hit_the_right_action(doc: dict[str, Any], viewset: Any) -> None:
    for name, method in doc["resources"][viewset.resource]["methods"].items():
        if name in outside_methods(viewset):
            continue
        try:
            match = _resolve_api_path(method["path"])
        except Resolver404:
            pytest.fail(f"{viewset.resource}.{name}: {method['path']} matches no route")
        actions = match.func.actions  # the DRF method -> action map of that route
        action = actions.get(method["httpMethod"].lower())
        assert action == ACTION_FOR_STANDARD.get(name, name), (viewset.resource, name, actions)
        if "{uuid}" in method["path"]:
            assert match.kwargs["uuid"] == SAMPLE_UUID


def test_methods_outside_the_viewsets_are_routed(doc: dict[str, Any]) -> None:
    """A method served by its own view is routed there, by its described path."""
    seen = set()
    for viewset in RESOURCE_VIEWSETS:
        for name in outside_methods(viewset):
            method = doc["resources"][viewset.resource]["methods"][name]
            match = _resolve_api_path(method["path"])
            assert match.url_name == f"{viewset.resource}-{name}"
            assert match.kwargs["uuid"] == SAMPLE_UUID
            seen.add(f"{viewset.resource}.{name}")
    assert seen == {"jobs.log_tail_follow"}


# --- the real client builds from it ----------------------------------------------------------


def test_googleapiclient_builds_every_resource(doc: dict[str, Any]) -> None:
    """googleapiclient resolves schemas lazily, when `api.<resource>()` is first called: build
    every resource and every method docstring here, without a server."""
    import httplib2
    from googleapiclient import discovery
    from googleapiclient.schema import Schemas

    service = discovery.build_from_document(doc, http=httplib2.Http())
    for resource, name, _method in all_methods(doc):
        bound = getattr(getattr(service, resource)(), name)
        assert callable(bound), (resource, name)
        assert bound.__doc__
    schemas = Schemas(doc)
    for name in doc["schemas"]:
        assert schemas.prettyPrintByName(name)
