"""Spec §1.8: every filter operator, its operand rules and its errors; where; order; select;
limit/offset; count; distinct."""

from __future__ import annotations

import pytest

from tests.api.test_conventions import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def links(api, active):
    """Five links of the active user with varied attributes."""
    user, token = active
    specs = [
        {
            "link_class": "tag",
            "name": "alpha",
            "head_uuid": "zzzzz-4zz18-aaaaaaaaaaaaaaa",
            "properties": {"k": "v1"},
        },
        {"link_class": "tag", "name": "Beta", "head_uuid": "zzzzz-4zz18-bbbbbbbbbbbbbbb"},
        {"link_class": "tag", "name": "gamma_1", "head_uuid": "zzzzz-8i9sb-ccccccccccccccc"},
        {"link_class": "note", "name": "delta%", "head_uuid": None},
        {"link_class": "note", "name": None, "head_uuid": "yyyyy-4zz18-ddddddddddddddd"},
    ]
    made = [api.ok("POST", "links", body={"link": s}, token=token) for s in specs]
    return token, made


def names(api, token, filters, **params):
    status, data = api.get("links", params={"filters": filters, **params}, token=token)
    assert status == 200, data
    return sorted(str(i["name"]) for i in data["items"])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([["name", "=", "alpha"]], ["alpha"]),
        ([["name", "=", None]], ["None"]),
        ([["name", "!=", "alpha"]], ["Beta", "None", "delta%", "gamma_1"]),  # NULL matches !=
        ([["name", "!=", None]], ["Beta", "alpha", "delta%", "gamma_1"]),
        ([["name", "<", "b"]], ["Beta", "alpha"]),
        ([["name", ">=", "delta%"]], ["delta%", "gamma_1"]),
        ([["name", "like", "%a"]], ["Beta", "alpha"]),
        ([["name", "like", "%A"]], []),
        ([["name", "ilike", "%A"]], ["Beta", "alpha"]),
        ([["name", "like", "beta"]], []),
        ([["name", "ilike", "beta"]], ["Beta"]),
        ([["name", "like", "gamma_1"]], ["gamma_1"]),
        ([["name", "like", "_lpha"]], ["alpha"]),
        ([["name", "in", ["alpha", "Beta", "zzz"]]], ["Beta", "alpha"]),
        ([["name", "in", []]], []),
        ([["name", "in", ["alpha", None]]], ["None", "alpha"]),
        ([["name", "not in", ["alpha"]]], ["Beta", "None", "delta%", "gamma_1"]),
        ([["name", "not in", ["alpha", None]]], ["Beta", "delta%", "gamma_1"]),
        ([["name", "not in", []]], ["Beta", "None", "alpha", "delta%", "gamma_1"]),
        ([["head_uuid", "is_a", "arvados#collection"]], ["Beta", "alpha"]),
        (
            [["head_uuid", "is_a", ["arvados#collection", "arvados#job"]]],
            ["Beta", "alpha", "gamma_1"],
        ),
        ([["head_uuid", "is_a", "arvados#nonsense"]], []),
        ([["link_class", "=", "tag"], ["name", "!=", "alpha"]], ["Beta", "gamma_1"]),
        ([[["name", "link_class"], "=", "note"]], ["None", "delta%"]),
        ([["any", "ilike", "BET%"]], ["Beta"]),
        ([["any", "@@", "gamma"]], ["gamma_1"]),
        ([["properties", "like", "%v1%"]], ["alpha"]),
        ([["name", "IN", ["alpha"]]], ["alpha"]),  # operator names are case-insensitive
    ],
)
def test_operators(api, links, filters, expected):
    token, _ = links
    assert names(api, token, filters) == expected


def test_datetime_and_integer_comparisons(api, links):
    token, made = links
    t = made[2]["created_at"]
    assert names(api, token, [["created_at", ">=", t]]) == sorted(str(m["name"]) for m in made[2:])
    assert names(api, token, [["created_at", "<", "2001-01-01"]]) == []
    assert len(names(api, token, [["created_at", ">", "2001-01-01 01:23:45"]])) == 5
    # integer columns take digit strings or (Quirk 2, resolved) JSON numbers
    assert len(names(api, token, [["id", ">", "0"]])) == 5
    assert len(names(api, token, [["id", ">", 0]])) == 5


def test_boolean_columns(api, make_user):
    _, admin_token = make_user("root2", admin=True)
    make_user("inactive", active=False)
    for operand in (False, "f", "no", "0", "FALSE", "n"):
        status, data = api.get(
            "users", params={"filters": [["is_active", "=", operand]]}, token=admin_token
        )
        assert [u["username"] for u in data["items"]] == ["inactive"], operand
    status, data = api.get(
        "users", params={"filters": [["is_active", "!=", "yes"]]}, token=admin_token
    )
    assert [u["username"] for u in data["items"]] == ["inactive"]
    assert_error(
        *api.get("users", params={"filters": [["is_active", "<", "t"]]}, token=admin_token),
        422,
        "Invalid operator '<' for boolean attribute 'is_active'",
    )
    assert_error(
        *api.get("users", params={"filters": [["is_active", "=", "maybe"]]}, token=admin_token), 422
    )


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (["name", "=", "x"], 'Invalid element in filters array: "name" is not an array'),
        ([["name", "="]], None),
        ([["name", 7, "x"]], "Invalid operator 7 (number) in filter"),
        ([["name", "~", "x"]], "Invalid operator '~'"),
        ([["nope", "=", "x"]], "Invalid attribute 'nope' in filter"),
        ([[7, "=", "x"]], "Invalid attribute 7 in filter"),
        ([["name", "in", "alpha"]], "Invalid operand type 'string' for 'in' operator in filters"),
        (
            [["name", "not in", {"a": 1}]],
            "Invalid operand type 'object' for 'not in' operator in filters",
        ),
        ([["created_at", "like", "2020%"]], "Invalid attribute 'created_at' in filter"),
        ([["created_at", ">", "yesterday-ish"]], None),
        ([["id", "=", "abc"]], None),
        ([["name", "=", True]], "Invalid operand type 'boolean' for '=' operator in filters"),
        ([["name", "<", None]], "Invalid operand type 'null' for '<' operator in filters"),
        ([["name", "@@", "x"]], None),
        ([["any", "@@", ["x"]]], "Invalid operand type 'array' for '@@' operator in filters"),
        ([["name", "like", 5]], "Invalid operand type 'number' for 'like' operator in filters"),
        ([["token_hash", "=", "x"]], None),
        ("not json", 'Could not parse "filters" param as an array'),
        ('{"a": 1}', 'Could not parse "filters" param as an array'),
    ],
)
def test_filter_errors(api, links, client, filters, message):
    token, _ = links
    params = {"filters": filters}
    status, data = api.get("links", params=params, token=token)
    assert_error(status, data, 422, message)


def test_token_hash_is_never_filterable(api, active):
    _, token = active
    assert_error(
        *api.get(
            "api_client_authorizations", params={"filters": [["token_hash", "=", "x"]]}, token=token
        ),
        422,
        "Invalid attribute 'token_hash' in filter",
    )


def test_where(api, links):
    token, _ = links

    def where(w):
        status, data = api.get("links", params={"where": w}, token=token)
        assert status == 200, data
        return sorted(str(i["name"]) for i in data["items"])

    assert where({"name": "alpha"}) == ["alpha"]
    assert where({"name": None}) == ["None"]
    assert where({"name": ["alpha", "Beta"]}) == ["Beta", "alpha"]
    assert where({"name": ["contains", "amm"]}) == ["gamma_1"]
    assert where({"any": ["contains", "GAMMA"]}) == ["gamma_1"]
    assert where({"no_such_column": 1, "link_class": "note"}) == ["None", "delta%"]
    assert_error(
        *api.get("links", params={"where": "[1]"}, token=token),
        422,
        'Could not parse "where" param as an object',
    )


def test_order(api, links):
    token, made = links

    def order(o, **extra):
        status, data = api.get("links", params={"order": o, **extra}, token=token)
        assert status == 200, data
        return [i["name"] for i in data["items"]]

    by_name = sorted((m["name"] for m in made if m["name"]), key=lambda n: n.encode())
    assert [n for n in order("name asc") if n] == by_name
    assert [n for n in order(["name desc"]) if n] == list(reversed(by_name))
    assert [n for n in order('["links.name DESC"]') if n] == list(reversed(by_name))
    # invalid entries are dropped silently; default is modified_at desc, uuid
    newest_first = [m["name"] for m in reversed(made)]
    assert order(["nonsense", "name; drop table", "other_table.name", 5]) == newest_first
    assert order("") == newest_first
    assert order([]) == newest_first


def test_select(api, links):
    token, made = links
    status, data = api.get(
        "links", params={"select": ["uuid", "name", "etag", "href"]}, token=token
    )
    assert status == 200
    assert all(set(i) == {"kind", "uuid", "name"} for i in data["items"])
    assert_error(
        *api.get("links", params={"select": ["uuid", "nope"]}, token=token),
        422,
        'Invalid attribute(s): ["nope"]',
    )
    assert_error(
        *api.get("links", params={"select": []}, token=token),
        422,
        "Attribute selection list cannot be empty",
    )


def test_limit_offset_count(api, links, settings):
    token, made = links
    status, data = api.get("links", params={"limit": 2, "offset": 1}, token=token)
    assert (data["limit"], data["offset"], data["items_available"]) == (2, 1, 5)
    assert len(data["items"]) == 2
    data = api.ok("GET", "links", params={"limit": "0"}, token=token)
    assert data["items"] == [] and data["items_available"] == 5
    data = api.ok("GET", "links", params={"count": "none"}, token=token)
    assert "items_available" not in data and len(data["items"]) == 5
    assert api.ok("GET", "links", params={"count": "exact"}, token=token)["items_available"] == 5
    settings.CRUNCH_MAX_ITEMS_PER_RESPONSE = 3
    assert api.ok("GET", "links", params={"limit": 1000}, token=token)["limit"] == 3
    for bad in ("-1", "1.5", "abc", True):
        assert_error(
            *api.get("links", params={"limit": bad}, token=token),
            422,
            "Invalid value for limit parameter",
        )
        assert_error(
            *api.get("links", params={"offset": bad}, token=token),
            422,
            "Invalid value for offset parameter",
        )
    assert_error(
        *api.get("links", params={"count": "some"}, token=token),
        422,
        "count parameter must be 'exact' or 'none'",
    )


@pytest.mark.parametrize("value", ["true", "1", 1, True, "false", "0", 0, False])
def test_distinct_accepts_booleans(api, links, value):
    token, _ = links
    assert api.get("links", params={"distinct": value}, token=token)[0] == 200


@pytest.mark.parametrize("value", ["yes", "2", "TRUE "])
def test_distinct_rejects_other_values(api, links, value):
    token, _ = links
    assert_error(
        *api.get("links", params={"distinct": value}, token=token),
        422,
        "distinct parameter must be a boolean, true or false",
    )


def test_distinct_over_selected_columns(api, links):
    token, made = links
    data = api.ok(
        "GET",
        "links",
        params={"select": ["link_class"], "distinct": True, "order": ["link_class asc"]},
        token=token,
    )
    assert data["items"] == [
        {"kind": "arvados#link", "link_class": "note"},
        {"kind": "arvados#link", "link_class": "tag"},
    ]
    assert data["items_available"] == 2
    # without distinct every row comes back
    data = api.ok("GET", "links", params={"select": ["link_class"]}, token=token)
    assert len(data["items"]) == 5
