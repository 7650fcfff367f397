"""Image search (spec §6.2, §6.3): `find_all_docker_images(search, tag, readers,
compatible_only)` over collections and links made through the API, with link ages set in the
database where ranking depends on them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jobs.docker import IncompatibleImage, find_all_docker_images, find_latest_docker_image
from jobs.exceptions import InvalidRequest
from jobs.models import Link
from jobs.services.tokens import system_user
from tests.reuse_world import image_id, manifest

pytestmark = pytest.mark.django_db

T2017 = "2017-01-01T00:00:00Z"
T2018 = "2018-01-01T00:00:00Z"


class Images:
    """Images stored as `arv keep docker` does, by the admin; readable by `active` unless
    made private (the admin reads everything)."""

    def __init__(self, api: Any, admin: Any, active: Any) -> None:
        self.api = api
        self.admin_user, self.admin = admin
        self.active_user, _ = active
        self.project = self.create("groups", {"name": "images", "group_class": "project"})
        self.create(
            "links",
            {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": self.active_user.uuid,
                "head_uuid": self.project["uuid"],
            },
        )

    def create(self, resource: str, attrs: dict[str, Any]) -> Any:
        return self.api.ok("POST", resource, body={resource[:-1]: attrs}, token=self.admin)

    def owner(self, private: bool) -> dict[str, str]:
        return {} if private else {"owner_uuid": self.project["uuid"]}

    def collection(self, text: str, *, private: bool = False) -> dict[str, Any]:
        return self.create("collections", {"manifest_text": text} | self.owner(private))

    def image(
        self,
        seed: str,
        *,
        v2: bool = False,
        private: bool = False,
        hash_link: bool = True,
        timestamp: str | None = T2017,
    ) -> dict[str, Any]:
        ident = image_id(seed)
        name = f"sha256:{ident}" if v2 else ident
        collection = self.collection(manifest(f"{name}.tar", seed, 2048), private=private)
        collection["image_id"] = ident
        collection["hash_name"] = name
        if hash_link:
            self.link(collection, "docker_image_hash", name, timestamp=timestamp)
        return collection

    def link(
        self,
        collection: dict[str, Any],
        link_class: str,
        name: str,
        *,
        timestamp: str | None = T2017,
        private: bool = False,
        age_days: float | None = None,
    ) -> Any:
        properties = {"image_timestamp": timestamp} if timestamp is not None else {}
        link = self.create(
            "links",
            {
                "link_class": link_class,
                "name": name,
                "head_uuid": collection["uuid"],
                "properties": properties,
            }
            | self.owner(private),
        )
        if age_days is not None:
            Link.objects.filter(uuid=link["uuid"]).update(
                created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
            )
        return link

    def tag(self, collection: dict[str, Any], repo_tag: str, **kw: Any) -> Any:
        return self.link(collection, "docker_image_repo+tag", repo_tag, **kw)

    def migrate(self, old: dict[str, Any], new: dict[str, Any], *, system: bool = True) -> Any:
        attrs = {
            "link_class": "docker_image_migration",
            "name": "migrate_1.9_1.10",
            "tail_uuid": old["portable_data_hash"],
            "head_uuid": new["portable_data_hash"],
        }
        if system:
            attrs["owner_uuid"] = system_user().uuid
        return self.create("links", attrs)


@pytest.fixture
def im(api: Any, admin: Any, active: Any) -> Images:
    return Images(api, admin, active)


def found(
    im: Images, search: str, tag: str | None = None, *, reader: Any = None, **kw: Any
) -> list[str]:
    images = find_all_docker_images(
        search=search, tag=tag, readers=[reader or im.active_user], **kw
    )
    return [c.portable_data_hash for c in images]


def pdh(*collections: dict[str, Any]) -> list[str]:
    return [c["portable_data_hash"] for c in collections]


# --- step 3: search by portable data hash ---------------------------------------------------


def test_pdh_search_needs_no_links_and_ignores_hints_and_tag(im: Images) -> None:
    plain = im.image("plain", hash_link=False)
    hashed = plain["portable_data_hash"]
    assert found(im, hashed) == [hashed]
    assert found(im, f"{hashed}+Kzzzzz+A{'0' * 40}@12345678") == [hashed]
    assert found(im, hashed, "whatever") == [hashed]


def test_pdh_search_of_an_unreadable_or_trashed_collection(im: Images) -> None:
    hidden = im.image("hidden", private=True)
    assert found(im, hidden["portable_data_hash"]) == []
    assert found(im, hidden["portable_data_hash"], reader=im.admin_user) == pdh(hidden)
    trashed = im.image("trashed")
    im.api.ok(
        "PUT",
        f"collections/{trashed['uuid']}",
        body={"collection": {"is_trashed": True}},
        token=im.admin,
    )
    assert found(im, trashed["portable_data_hash"]) == []


def test_pdh_search_of_something_that_is_no_image(im: Images, settings: Any) -> None:
    """Step 3 returns the collection only if it is a compatible image: anything else is
    nothing found (not the "incompatible" error of step 8, which needs link matches), with
    the compatibility filter on or off."""
    two_files = im.collection(
        manifest(f"{image_id('a')}.tar", "a", 10).rstrip("\n") + f" 0:10:{image_id('b')}.tar\n"
    )
    not_a_tar = im.collection(manifest("notes.txt", "hello"))
    for collection in (two_files, not_a_tar):
        assert found(im, collection["portable_data_hash"]) == []
        assert found(im, collection["portable_data_hash"], compatible_only=False) == []
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = ["v2"]
    v1 = im.image("v1 by pdh")
    assert found(im, v1["portable_data_hash"]) == []
    assert found(im, v1["portable_data_hash"], compatible_only=False) == pdh(v1)


def test_a_32_hex_search_is_a_locator(im: Images) -> None:
    """32 hex digits parse as a Keep locator, so they are a PDH search, not a hash prefix."""
    image = im.image("prefix")
    assert found(im, image["image_id"][:31]) == pdh(image)
    assert found(im, image["image_id"][:32]) == []
    assert found(im, image["image_id"][:33]) == pdh(image)


# --- steps 4-6: repo:tag, then hash prefix ----------------------------------------------------


def test_repo_tag_search_and_the_default_tag(im: Images) -> None:
    latest = im.image("latest")
    im.tag(latest, "arvados/jobs:latest")
    pinned = im.image("pinned")
    im.tag(pinned, "arvados/jobs:1.0")
    assert found(im, "arvados/jobs") == pdh(latest)
    assert found(im, "arvados/jobs:latest") == pdh(latest)
    assert found(im, "arvados/jobs:1.0") == pdh(pinned)
    assert found(im, "arvados/jobs", "1.0") == pdh(pinned)
    assert found(im, "arvados/jobs", "") == pdh(latest)  # an empty tag is no tag
    assert found(im, "arvados/jobs:2.0") == []
    assert found(im, "arvados") == []  # names are matched whole


def test_a_given_tag_does_not_split_the_search(im: Images) -> None:
    """§2.4 item 4 / §6.3 step 4: with a tag, the search is exactly "<search>:<tag>" and the
    hash search uses the whole search; without one, it is split at the first ':'."""
    odd = im.image("odd")
    im.tag(odd, "registry:5000/jobs:1.0")
    assert found(im, "registry:5000/jobs:1.0") == pdh(odd)  # "registry" + "5000/jobs:1.0"
    assert found(im, "registry", "5000/jobs:1.0") == pdh(odd)
    assert found(im, "registry:5000/jobs", "1.0") == pdh(odd)
    colons = im.image("colons")
    im.tag(colons, "repo:a:b")
    assert found(im, "repo:a:b") == pdh(colons)
    assert found(im, "repo", "a:b") == pdh(colons)
    # the split shows in the hash search: "sha256:<prefix>" without a tag searches the
    # tag "sha256:<prefix>" and then the hash prefix "sha256", i.e. every v2 image
    older = im.image("older v2", v2=True, timestamp=T2017)
    newer = im.image("newer v2", v2=True, timestamp=T2018)
    prefix = f"sha256:{older['image_id'][:20]}"
    assert found(im, prefix) == pdh(newer, older)
    assert found(im, prefix, "latest") == pdh(older)  # a given tag keeps the search whole


def test_hash_prefix_search(im: Images) -> None:
    v1 = im.image("v1 image")
    v2 = im.image("v2 image", v2=True)
    assert found(im, v1["image_id"]) == pdh(v1)
    assert found(im, v1["image_id"][:25]) == pdh(v1)
    assert found(im, f"sha256:{v2['image_id'][:20]}", "latest") == pdh(v2)
    # v2 links are named "sha256:<hex>"; the bare hex that `docker images` shows finds them
    assert found(im, v2["image_id"][:20]) == pdh(v2)
    assert found(im, v2["image_id"][:12]) == pdh(v2)
    assert found(im, v1["image_id"][:25].upper()) == []  # case-sensitive
    assert found(im, "") == []


def test_a_hash_like_tag_is_found_by_tag_first(im: Images) -> None:
    looks_like = "a" * 64
    by_hash = im.image("by hash", hash_link=False)
    im.link(by_hash, "docker_image_hash", looks_like)
    by_tag = im.image("by tag")
    im.tag(by_tag, f"{looks_like}:latest")
    assert found(im, looks_like) == pdh(by_tag)
    assert found(im, "a" * 30) == pdh(by_hash)  # no such tag: the hash prefix
    # another tag: no such tag link, so the hash search runs with the whole name
    assert found(im, looks_like, "other") == pdh(by_hash)
    assert found(im, f"{looks_like}:other") == pdh(by_hash)


def test_tag_links_to_unreadable_images_do_not_hide_the_hash_search(im: Images) -> None:
    """Step 1: candidate links must have a readable head collection; a readable tag link to
    an unreadable image is no match, so the hash search still runs."""
    looks_like = "b" * 64
    by_hash = im.image("by hash", hash_link=False)
    im.link(by_hash, "docker_image_hash", looks_like)
    hidden = im.image("hidden", private=True)
    im.tag(hidden, f"{looks_like}:latest")  # the link is readable, its image is not
    assert found(im, looks_like) == pdh(by_hash)
    assert found(im, looks_like, reader=im.admin_user) == pdh(hidden)


def test_unreadable_links_are_not_matches(im: Images) -> None:
    image = im.image("image", hash_link=False)
    im.link(image, "docker_image_hash", image["hash_name"], private=True)
    im.tag(image, "arvados/jobs:latest", private=True)
    assert found(im, "arvados/jobs") == []
    assert found(im, image["image_id"]) == []
    assert found(im, "arvados/jobs", reader=im.admin_user) == pdh(image)
    # several readers: any of them may read
    assert (
        find_all_docker_images(
            search="arvados/jobs", tag=None, readers=[im.active_user, im.admin_user]
        )[0].portable_data_hash
        == image["portable_data_hash"]
    )


# --- step 7: ranking -------------------------------------------------------------------------


def test_ranking_by_image_timestamp_then_link_age(im: Images) -> None:
    stamped_old = im.image("stamped old", hash_link=False)
    im.tag(stamped_old, "r:latest", timestamp="2016-01-01T00:00:00Z", age_days=1)
    stamped_new = im.image("stamped new", hash_link=False)
    im.tag(stamped_new, "r:latest", timestamp="2017-06-01T12:00:00.123456789Z", age_days=30)
    # an "ancient" image: the newest link, but the oldest image_timestamp
    ancient = im.image("ancient", hash_link=False)
    im.tag(ancient, "r:latest", timestamp="2001-01-01T00:00:00Z", age_days=0)
    unstamped_older = im.image("unstamped older", hash_link=False)
    im.tag(unstamped_older, "r:latest", timestamp=None, age_days=20)
    unstamped_newer = im.image("unstamped newer", hash_link=False)
    im.tag(unstamped_newer, "r:latest", timestamp=None, age_days=10)
    garbage = im.image("garbage timestamp", hash_link=False)
    im.tag(garbage, "r:latest", timestamp="not a time", age_days=5)
    assert found(im, "r") == pdh(
        stamped_new, stamped_old, ancient, garbage, unstamped_newer, unstamped_older
    )
    latest = find_latest_docker_image(search="r", tag=None, readers=[im.active_user])
    assert latest is not None and latest.portable_data_hash == stamped_new["portable_data_hash"]
    assert find_latest_docker_image(search="nothing", tag=None, readers=[im.active_user]) is None


def test_several_links_to_one_image_keep_the_oldest_links_key(im: Images) -> None:
    """The artefact of step 7: links are visited newest first and overwrite each other, so
    an image re-tagged with a newer timestamp still ranks by its oldest link."""
    retagged = im.image("retagged", hash_link=False)
    im.tag(retagged, "r:latest", timestamp="2015-01-01T00:00:00Z", age_days=100)
    im.tag(retagged, "r:latest", timestamp="2018-01-01T00:00:00Z", age_days=1)
    middle = im.image("middle", hash_link=False)
    im.tag(middle, "r:latest", timestamp="2016-01-01T00:00:00Z", age_days=50)
    assert found(im, "r") == pdh(middle, retagged)
    # the same for hash links: the oldest link of each image decides
    one = im.image("one", hash_link=False)
    im.link(one, "docker_image_hash", "c" * 64, timestamp=None, age_days=3)
    im.link(one, "docker_image_hash", "c" * 63 + "d", timestamp=T2018, age_days=2)
    two = im.image("two", hash_link=False)
    im.link(two, "docker_image_hash", "c" * 62 + "ee", timestamp=T2017, age_days=1)
    assert found(im, "c" * 20) == pdh(two, one)


# --- step 8: compatibility and migration -------------------------------------------------------


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        (["v1"], ["v1"]),
        (["v2"], ["v2"]),
        (["v1", "v2"], ["v2", "v1"]),
        (["v2", "v1"], ["v2", "v1"]),
    ],
)
def test_compatibility_follows_the_formats_setting(
    im: Images, settings: Any, formats: list[str], expected: list[str]
) -> None:
    v1 = im.image("v1", hash_link=False)
    im.tag(v1, "r:latest", timestamp=T2017)
    v2 = im.image("v2", v2=True, hash_link=False)
    im.tag(v2, "r:latest", timestamp=T2018)
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = formats
    by_name = {"v1": v1, "v2": v2}
    assert found(im, "r") == pdh(*(by_name[e] for e in expected))
    # without the filter every format is an image
    assert found(im, "r", compatible_only=False) == pdh(v2, v1)


def test_only_incompatible_matches_raise(im: Images, settings: Any) -> None:
    v1 = im.image("v1")
    im.tag(v1, "r:latest")
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = ["v2"]
    with pytest.raises(IncompatibleImage) as info:
        found(im, "r")
    assert info.value.messages == [
        "Matching Docker image is incompatible with 'docker_image_formats' configuration."
    ]
    with pytest.raises(IncompatibleImage):
        found(im, v1["image_id"][:20])
    assert found(im, "r", compatible_only=False) == pdh(v1)
    assert found(im, "nothing") == []  # no match at all is no error


def test_links_to_collections_that_are_no_images(im: Images) -> None:
    not_an_image = im.collection(manifest("notes.txt", "hello"))
    im.tag(not_an_image, "r:latest", timestamp=T2018)
    with pytest.raises(IncompatibleImage):
        found(im, "r")
    image = im.image("image", hash_link=False)
    im.tag(image, "r:latest", timestamp=T2017)
    assert found(im, "r") == pdh(image)


def test_invalid_formats_setting(im: Images, settings: Any) -> None:
    im.tag(im.image("image"), "r:latest")
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = []
    with pytest.raises(InvalidRequest):
        found(im, "r")
    assert found(im, "r", compatible_only=False) != []


def test_migration_links(im: Images, settings: Any) -> None:
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = ["v2"]
    old = im.image("old v1")
    im.tag(old, "r:latest")
    first = im.image("first v2", v2=True, hash_link=False)
    im.migrate(old, first)
    assert found(im, "r") == pdh(first)
    assert found(im, old["portable_data_hash"]) == pdh(first)  # also by PDH
    assert found(im, old["image_id"][:20]) == pdh(first)
    # several migrations of one image: the newest wins
    second = im.image("second v2", v2=True, hash_link=False)
    im.migrate(old, second)
    assert found(im, "r") == pdh(second)
    # without the compatibility filter the old image itself is fine
    assert found(im, "r", compatible_only=False) == pdh(old)


def test_migration_links_must_be_the_systems_and_lead_to_readable_images(
    im: Images, settings: Any
) -> None:
    settings.CRUNCH_DOCKER_IMAGE_FORMATS = ["v2"]
    old = im.image("old v1")
    im.tag(old, "r:latest")
    by_admin = im.image("by admin", v2=True, hash_link=False)
    im.migrate(old, by_admin, system=False)
    with pytest.raises(IncompatibleImage):
        found(im, "r")
    hidden = im.image("hidden v2", v2=True, hash_link=False, private=True)
    im.migrate(old, hidden)
    with pytest.raises(IncompatibleImage):
        found(im, "r")
    assert found(im, "r", reader=im.admin_user) == pdh(hidden)
    v1_target = im.image("another v1", hash_link=False)
    im.migrate(old, v1_target)
    with pytest.raises(IncompatibleImage):
        found(im, "r", reader=im.admin_user)
