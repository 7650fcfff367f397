"""A small world for the reuse and image-search tests (spec §3, §6), built through the API.

- `active/foo`: the spec's example history (C1 -> C2 -> C3 -> C4, tag1 = C2, master = C3,
  b1 = C4, HEAD -> b1), owned by `active` and readable by `spectator`;
- `arvados`: the SDK repository (S1 -> S2 -> S3, tag `sdk1` = S1, master = S3, HEAD ->
  master), created by the admin and readable by both users;
- a project `shared`, owned by the admin and readable by both users: images, outputs and logs
  that everyone may read live there; anything else the admin creates stays private.

Both git histories are built once per session (`build_templates`) and copied into each test's
bare repositories, which is much cheaper than committing and pushing every time.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import git
from tests.git_helpers import Example, build_example, client_env, in_bare, push_example, run_git

SCRIPT = "hash"


@dataclass(frozen=True)
class Templates:
    foo: Path
    arvados: Path
    c1: str
    c2: str
    c3: str
    c4: str
    s1: str
    s2: str
    s3: str


def build_templates(tmp: Path) -> Templates:
    example = build_example(tmp / "example")
    foo = tmp / "foo.git"
    run_git(example.env, "init", "-q", "--bare", str(foo))
    push_example(example, str(foo))
    in_bare(example.env, foo, "symbolic-ref", "HEAD", "refs/heads/b1")

    env = client_env(tmp / "sdk-home")
    work = tmp / "sdk"
    run_git(env, "init", "-q", "--initial-branch=master", str(work))
    sdk = Example(work=work, env=env, c1="", c2="", c3="", c4="")
    base = 1_400_000_000  # other dates than the example's: other commit ids
    s1, s2, s3 = (sdk.commit(f"SDK {n}", base + 60 * n) for n in (1, 2, 3))
    sdk.git("tag", "sdk1", s1)
    arvados = tmp / "arvados.git"
    run_git(env, "init", "-q", "--bare", str(arvados))
    push_example(sdk, str(arvados))
    in_bare(env, arvados, "symbolic-ref", "HEAD", "refs/heads/master")
    return Templates(
        foo=foo,
        arvados=arvados,
        c1=example.c1,
        c2=example.c2,
        c3=example.c3,
        c4=example.c4,
        s1=s1,
        s2=s2,
        s3=s3,
    )


def fill(uuid: str, template: Path) -> None:
    """Replace the hosted repository `uuid`'s bare repository with a copy of `template`."""
    path = git.repository_path(uuid)
    shutil.rmtree(path)
    shutil.copytree(template, path)


def manifest(name: str, content: str, size: int | None = None) -> str:
    """A one-file manifest (the block need not exist: the admin may store any manifest)."""
    md5 = hashlib.md5(content.encode()).hexdigest()
    size = len(content) if size is None else size
    return f". {md5}+{size} 0:{size}:{name}\n"


def image_id(seed: str) -> str:
    """A 64-hex image id derived from `seed`."""
    return hashlib.sha256(seed.encode()).hexdigest()


class World:
    """The users, repositories and helpers to make collections, images and jobs."""

    def __init__(
        self, api: Any, templates: Templates, admin: Any, active: Any, spectator: Any
    ) -> None:
        self.api = api
        self.t = templates
        self.admin_user, self.admin = admin
        self.active_user, self.active = active
        self.spectator_user, self.spectator = spectator
        self.c1, self.c2, self.c3, self.c4 = templates.c1, templates.c2, templates.c3, templates.c4
        self.s1, self.s2, self.s3 = templates.s1, templates.s2, templates.s3
        self.names = {
            self.c1: "C1",
            self.c2: "C2",
            self.c3: "C3",
            self.c4: "C4",
            self.s1: "S1",
            self.s2: "S2",
            self.s3: "S3",
        }
        foo = api.ok(
            "POST", "repositories", body={"repository": {"name": "active/foo"}}, token=self.active
        )
        fill(foo["uuid"], templates.foo)
        self.foo_uuid = foo["uuid"]
        self.share(foo["uuid"], self.spectator_user)
        arvados = self.create("repositories", {"name": "arvados"})
        fill(arvados["uuid"], templates.arvados)
        self.arvados_uuid = arvados["uuid"]
        self.shared = self.create("groups", {"name": "shared", "group_class": "project"})["uuid"]
        for user in (self.active_user, self.spectator_user):
            self.share(arvados["uuid"], user)
            self.share(self.shared, user)

    # --- objects made by the admin -----------------------------------------------------------

    def create(self, resource: str, attrs: dict[str, Any], token: str | None = None) -> Any:
        singular = {"repositories": "repository"}.get(resource, resource[:-1])
        return self.api.ok("POST", resource, body={singular: attrs}, token=token or self.admin)

    def share(self, head_uuid: str, user: Any, level: str = "can_read") -> Any:
        return self.create(
            "links",
            {
                "link_class": "permission",
                "name": level,
                "tail_uuid": user.uuid,
                "head_uuid": head_uuid,
            },
        )

    def collection(self, content: str, *, shared: bool = True, name: str = "out.txt") -> str:
        """The portable data hash of a new collection holding one file with `content`;
        readable by everyone when `shared`, else by the admin only."""
        attrs: dict[str, Any] = {"manifest_text": manifest(name, content)}
        if shared:
            attrs["owner_uuid"] = self.shared
        return self.create("collections", attrs)["portable_data_hash"]

    def image(
        self,
        seed: str,
        *,
        repo_tag: str | None = None,
        timestamp: str | None = "2017-01-01T00:00:00Z",
        v2: bool = False,
        shared: bool = True,
        hash_name: str | None = None,
    ) -> dict[str, Any]:
        """Store an image as `arv keep docker` does (§6.2): a collection holding one
        `<id>.tar` (v1) or `sha256:<id>.tar` (v2), a `docker_image_hash` link and, with
        `repo_tag`, a `docker_image_repo+tag` link. Returns the collection with `image_id`
        and the links added."""
        ident = image_id(seed)
        name = f"sha256:{ident}" if v2 else ident
        owner = {"owner_uuid": self.shared} if shared else {}
        collection = self.create(
            "collections", {"manifest_text": manifest(f"{name}.tar", seed, 1024)} | owner
        )
        properties = {"image_timestamp": timestamp} if timestamp is not None else {}
        links = [
            self.create(
                "links",
                {
                    "link_class": "docker_image_hash",
                    "name": hash_name or name,
                    "head_uuid": collection["uuid"],
                    "properties": properties,
                }
                | owner,
            )
        ]
        if repo_tag is not None:
            links.append(self.tag(collection, repo_tag, timestamp=timestamp, shared=shared))
        return collection | {"image_id": ident, "links": links}

    def tag(
        self,
        collection: dict[str, Any],
        repo_tag: str,
        *,
        timestamp: str | None = "2017-01-01T00:00:00Z",
        shared: bool = True,
    ) -> Any:
        properties = {"image_timestamp": timestamp} if timestamp is not None else {}
        return self.create(
            "links",
            {
                "link_class": "docker_image_repo+tag",
                "name": repo_tag,
                "head_uuid": collection["uuid"],
                "properties": properties,
            }
            | ({"owner_uuid": self.shared} if shared else {}),
        )

    # --- jobs --------------------------------------------------------------------------------

    @staticmethod
    def attrs(**extra: Any) -> dict[str, Any]:
        return {
            "repository": "active/foo",
            "script": SCRIPT,
            "script_version": "master",
            "script_parameters": {},
        } | extra

    def job(self, token: str | None = None, **extra: Any) -> dict[str, Any]:
        """A job created without reuse (by `active` unless `token` says otherwise)."""
        return self.api.ok(
            "POST", "jobs", body={"job": self.attrs(**extra)}, token=token or self.active
        )

    def done(
        self,
        token: str | None = None,
        *,
        output: str | None = None,
        log: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A Complete job recording finished work, with a readable output and log unless
        given."""
        output = output if output is not None else self.collection("the output")
        log = log if log is not None else self.collection("a log", name="log.txt")
        return self.job(token, state="Complete", output=output, log=log, **extra)

    def submit(
        self,
        token: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        **extra: Any,
    ) -> tuple[int, Any]:
        """POST a job with find_or_create=true (unless params say otherwise)."""
        return self.api.post(
            "jobs",
            params={"find_or_create": True} | (params or {}),
            body={"job": self.attrs(**extra)},
            token=token or self.active,
        )

    def reuse(self, token: str | None = None, **kw: Any) -> dict[str, Any]:
        status, body = self.submit(token, **kw)
        assert status == 200, (status, body)
        return body

    def error(self, token: str | None = None, **kw: Any) -> str:
        """The single error message of a submission that must fail with 422."""
        status, body = self.submit(token, **kw)
        assert status == 422, (status, body)
        assert len(body["errors"]) == 1, body
        return str(body["errors"][0])

    def list(self, filters: list[Any], token: str | None = None) -> list[str]:
        """The uuids of the jobs a list with `filters` returns, oldest first."""
        body = self.api.ok(
            "GET",
            "jobs",
            params={"filters": filters, "order": ["created_at asc"], "limit": 1000},
            token=token or self.active,
        )
        return [item["uuid"] for item in body["items"]]
