"""Commit range resolution (spec §4), the ref syntax check and internal tags (§2.12), on real
git repositories: the spec's example `active/foo` (C1 -> C2 -> C3 -> C4, tag1 = C2,
master = C3, b1 = C4, HEAD -> b1), created through the API and written directly on disk."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs import git
from jobs.exceptions import InvalidRequest, RepositoryUnusable
from jobs.git import check_ref_format, commits, find_commit_range, resolve_commit
from tests.git_helpers import (
    Example,
    build_example,
    in_bare,
    join_server_threads,
    push_example,
)

# --- The ref syntax check ---------------------------------------------------------------------


def git_accepts(ref: str) -> bool:
    """What §4 step 2 asks for, computed by git itself."""
    if not ref or ref[0] in "-$":
        return False
    proc = subprocess.run(
        ["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


SPEC_REFUSED = [
    "",
    "-h",
    "--all",
    "$HOME",
    "master^",
    "HEAD~1",
    "tag1..master",
    "master@{1}",
    "@{-1}",
    "@",
    "x.lock",
    "a/x.lock",
    "master/",
    "/master",
    "a//b",
    ".hidden",
    "a/.b",
    "a.",
    "with space",
    ";touch x",
    "$(touch x)",
    "a:b",
    ":/C2",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "tab\there",
    "new\nline",
    "nul\x00",
    "del\x7f",
]
SPEC_ACCEPTED = [
    "master",
    "b1",
    "tag1",
    "HEAD",
    "heads/master",
    "refs/heads/master",
    "a.b",
    "a./b",
    "a@b",
    "a{b}",
    "x.lockx",
    "a$(touch${IFS}x)",
    "a`touch`",
    "ünïcödé",
    "0123456",
    "a;b;c",  # accepted by git; harmless because refs never meet a shell
]


@pytest.mark.parametrize("ref", SPEC_REFUSED)
def test_spec_refusals(ref: str) -> None:
    assert check_ref_format(ref) is False


@pytest.mark.parametrize("ref", SPEC_ACCEPTED)
def test_spec_acceptances(ref: str) -> None:
    assert check_ref_format(ref) is True
    assert git_accepts(ref)


def test_non_strings_are_refused() -> None:
    for value in (None, 1, b"master", ["master"], {"x": 1}):
        assert check_ref_format(value) is False


# Characters where the rules live, plus ordinary ones.
TRICKY = "./@{}-$~^:?*[\\ \t\x7f\x01lockab0é"


def test_agrees_with_git_on_all_short_strings() -> None:
    alphabet = sorted(set(TRICKY))
    samples = ["".join(p) for n in (1, 2) for p in itertools.product(alphabet, repeat=n)]
    samples += [f"{s}.lock" for s in alphabet] + [f"a/{s}" for s in alphabet]
    mismatches = [s for s in samples if check_ref_format(s) != git_accepts(s)]
    assert mismatches == []


ref_strings = st.one_of(
    st.text(alphabet=st.sampled_from(TRICKY), max_size=12),
    st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        max_size=12,
    ),
    st.lists(
        st.sampled_from(["a", "b", ".", "..", "/", "@", "{", "lock", ".lock", "-", "$"]), max_size=8
    ).map("".join),
)


@hsettings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ref_strings)
def test_agrees_with_git_check_ref_format(ref: str) -> None:
    assert check_ref_format(ref) == git_accepts(ref)


# --- The example repository -------------------------------------------------------------------


@dataclass
class Foo:
    user: Any
    token: str
    uuid: str
    bare: Path
    example: Example

    def range(
        self,
        min: str | None = None,
        max: str | None = None,
        exclude: list[str] | None = None,
        *,
        user: Any = None,
        repo: str = "active/foo",
    ) -> list[str]:
        return find_commit_range(
            user=user or self.user, repo=repo, min=min, max=max, exclude=exclude
        )

    def bare_git(self, *args: str) -> str:
        return in_bare(self.example.env, self.bare, *args)

    def names(self, commits: list[str]) -> list[str]:
        """C1..C4 for the example's commits (readable failures)."""
        ex = self.example
        by_hash = {ex.c1: "C1", ex.c2: "C2", ex.c3: "C3", ex.c4: "C4"}
        return [by_hash.get(c, c) for c in commits]

    def sub(self, value: Any) -> Any:
        """ "C2" -> C2's hash, "C2:7" -> its first 7 characters; lists element-wise."""
        if isinstance(value, list):
            return [self.sub(v) for v in value]
        if isinstance(value, str) and value[:1] == "C" and value[1:2].isdigit():
            name, _, length = value.partition(":")
            full = getattr(self.example, name.lower())
            return full[: int(length)] if length else full
        return value


def make_foo(api: Any, active: tuple[Any, str], tmp_path: Path) -> Foo:
    user, token = active
    status, data = api.post(
        "repositories", body={"repository": {"name": "active/foo"}}, token=token
    )
    assert status == 200, data
    bare = git.repository_path(data["uuid"])
    example = build_example(tmp_path / "example")
    push_example(example, str(bare))
    in_bare(example.env, bare, "symbolic-ref", "HEAD", "refs/heads/b1")
    return Foo(user=user, token=token, uuid=data["uuid"], bare=bare, example=example)


@pytest.fixture
def foo(api: Any, active: tuple[Any, str], tmp_path: Path) -> Foo:
    return make_foo(api, active, tmp_path)


RANGE_CASES = [
    # min, max, exclude, expected
    (None, None, None, ["C4"]),  # null max is HEAD, which is b1
    (None, "HEAD", None, ["C4"]),
    (None, "master", None, ["C3"]),
    (None, "b1", None, ["C4"]),
    (None, "tag1", None, ["C2"]),
    ("", "master", None, ["C3"]),  # an empty min counts as no min
    ("", None, None, ["C4"]),
    ("tag1", "master", None, ["C3", "C2"]),
    ("tag1", None, None, ["C4", "C3", "C2"]),
    ("C1", "b1", None, ["C4", "C3", "C2", "C1"]),
    ("C1", "C3", None, ["C3", "C2", "C1"]),
    ("master", "master", None, ["C3"]),
    ("b1", "tag1", None, ["C4"]),  # nothing in b1..tag1; min is still appended
    ("tag1", "b1", ["C3"], ["C4", "C2"]),
    ("tag1", "b1", ["tag1"], ["C4", "C3"]),  # an excluded min is not appended
    ("tag1", "b1", ["master", "b1"], ["C2"]),
    ("tag1", "b1", ["b1", "master", "tag1"], []),
    (None, "master", ["master"], []),  # without min: [max] unless excluded
    (None, "master", ["C3"], []),
    (None, "master", ["b1"], ["C3"]),
    ("tag1", "b1", ["__nosuchbranch__"], ["C4", "C3", "C2"]),  # unknown exclude: ignored
    ("tag1", "b1", [], ["C4", "C3", "C2"]),
    ("tag1", "b1", ["master^"], []),  # a bad exclude empties the whole call
    ("tag1", "b1", ["tag1", ""], []),
    ("tag1", "b1", ["HEAD~1"], []),
    (None, "__nosuchbranch__", None, []),
    ("__nosuchbranch__", "master", None, []),
    (None, "C3", None, ["C3"]),
    (None, "C3:39", None, ["C3"]),  # unambiguous abbreviations resolve
    (None, "C3:12", None, ["C3"]),
    (None, "C2:7", None, ["C2"]),
    ("C1:10", "C2:10", None, ["C2", "C1"]),
    (None, "0" * 40, None, []),  # a full id that is no object here
    (None, "master^", None, []),  # revision expressions are not accepted
    (None, "HEAD~1", None, []),
    (None, "tag1..master", None, []),
    (None, "master@{0}", None, []),
    ("master^", "b1", None, []),
    (None, "", None, []),  # an empty max is not "no max"
]


@pytest.mark.parametrize(("min_", "max_", "exclude", "expected"), RANGE_CASES)
def test_range(foo: Foo, min_: Any, max_: Any, exclude: Any, expected: list[str]) -> None:
    found = foo.range(foo.sub(min_), foo.sub(max_), foo.sub(exclude))
    assert foo.names(found) == expected


def test_range_is_git_rev_list_order(foo: Foo) -> None:
    expected = foo.bare_git("rev-list", f"{foo.example.c1}..{foo.example.c4}").split()
    assert foo.range(foo.example.c1, "b1") == [*expected, foo.example.c1]


def test_full_id_wins_over_a_branch_with_that_name(foo: Foo) -> None:
    ex = foo.example
    foo.bare_git("update-ref", f"refs/heads/{ex.c2}", ex.c4)  # git warns; we must not care
    assert foo.names(foo.range(None, ex.c2)) == ["C2"]
    assert foo.names(foo.range(None, f"heads/{ex.c2}")) == ["C4"]


def test_short_name_is_a_ref_before_an_abbreviation(foo: Foo) -> None:
    ex = foo.example
    foo.bare_git("update-ref", f"refs/heads/{ex.c1[:7]}", ex.c3)
    assert foo.names(foo.range(None, ex.c1[:7])) == ["C3"]
    assert foo.names(foo.range(None, f"heads/{ex.c1[:7]}")) == ["C3"]
    assert foo.names(foo.range(None, ex.c1[:8])) == ["C1"]  # no such branch: abbreviation


def test_heads_prefix_forces_the_branch(foo: Foo) -> None:
    ex = foo.example
    foo.bare_git("update-ref", "refs/tags/dup", ex.c1)
    foo.bare_git("update-ref", "refs/heads/dup", ex.c4)
    assert foo.names(foo.range(None, "dup")) == ["C1"]  # git's order: tags before heads
    assert foo.names(foo.range(None, "heads/dup")) == ["C4"]
    assert foo.names(foo.range(None, "tags/dup")) == ["C1"]
    assert foo.names(foo.range(None, "refs/heads/dup")) == ["C4"]


def test_annotated_tags_peel_and_non_commits_do_not_resolve(foo: Foo) -> None:
    ex = foo.example
    foo.example.git("tag", "-a", "-m", "release", "v1", ex.c3)
    foo.example.git("push", "-q", str(foo.bare), "refs/tags/v1")
    assert foo.names(foo.range(None, "v1")) == ["C3"]
    assert foo.names(foo.range("tag1", "v1")) == ["C3", "C2"]
    tree = foo.bare_git("rev-parse", f"{ex.c3}^{{tree}}").strip()
    blob = foo.bare_git("rev-parse", f"{ex.c3}:file.txt").strip()
    assert foo.range(None, tree) == []
    assert foo.range(None, blob) == []
    assert foo.range(tree, "b1") == []


def test_malformed_excludes_are_bad_revisions(foo: Foo) -> None:
    for exclude in ("master", 3, {"master": 1}, [None], [["master"]]):
        assert foo.range("tag1", "b1", exclude) == []  # type: ignore[arg-type]
    assert foo.names(foo.range("tag1", "b1", ("master",))) == ["C4", "C2"]  # type: ignore


def test_resolve_commit(foo: Foo) -> None:
    assert resolve_commit(user=foo.user, repo="active/foo", ref="master") == foo.example.c3
    assert resolve_commit(user=foo.user, repo="active/foo", ref=None) == foo.example.c4
    assert resolve_commit(user=foo.user, repo="active/foo", ref="nope") is None


def test_ranges_between_fixed_commits_are_cached(foo: Foo) -> None:
    ex = foo.example
    before = commits.rev_list.cache_info()
    first = foo.range(ex.c1, ex.c4)
    second = foo.range(ex.c1, ex.c4)
    after = commits.rev_list.cache_info()
    assert first == second == [ex.c4, ex.c3, ex.c2, ex.c1]
    assert after.hits == before.hits + 1
    # Resolution is not cached: a commit that is gone from the repository is gone.
    assert foo.range(ex.c1, "0" * 40) == []


def test_empty_repository_has_no_head(api: Any, active: tuple[Any, str]) -> None:
    user, token = active
    api.ok("POST", "repositories", body={"repository": {"name": "active/empty"}}, token=token)
    assert find_commit_range(user=user, repo="active/empty", min=None, max=None, exclude=None) == []


# --- Repositories that cannot be used ---------------------------------------------------------


NOT_HOSTED_NAMES = [
    "bogus/repo",
    "/abs/path",
    "file:///x.git",
    "git.example.com/x.git",
    "github.com/x.git",
    "HTTP://example.com/x.git",
    "ssh://example.com/x.git",
    "active/foo/../foo",
    "active/foo.git",
    "",
    "--upload-pack=touch x",
    "ext::sh -c touch% x",
    "../repositories/x",
]


@pytest.mark.parametrize("name", NOT_HOSTED_NAMES)
def test_unknown_names_raise_not_found_without_fetching(foo: Foo, settings: Any, name: str) -> None:
    with pytest.raises(RepositoryUnusable) as raised:
        foo.range(None, "master", repo=name)
    assert raised.value.messages == [f"Repository not found: '{name}'"]
    assert isinstance(raised.value, InvalidRequest)  # a 422
    assert not (Path(settings.CRUNCH_GIT_DIR) / "remote").exists()


def test_syntax_is_checked_before_the_repository_is_looked_up(foo: Foo) -> None:
    assert foo.range(None, "master^", repo="bogus/repo") == []
    assert foo.range("bad ref", "master", repo="bogus/repo") == []
    with pytest.raises(RepositoryUnusable, match="Repository not found"):
        foo.range(None, "master", ["bad ref"], repo="bogus/repo")


def test_unreadable_repository_looks_missing(
    foo: Foo, make_user: Any, api: Any, admin: tuple[Any, str]
) -> None:
    other, _ = make_user("other")
    with pytest.raises(RepositoryUnusable, match=r"^Repository not found: 'active/foo'$"):
        foo.range(None, "master", user=other)
    assert foo.names(foo.range(None, "master", user=admin[0])) == ["C3"]
    api.ok(
        "POST",
        "links",
        token=foo.token,
        body={
            "link": {
                "link_class": "permission",
                "name": "can_read",
                "tail_uuid": other.uuid,
                "head_uuid": foo.uuid,
            }
        },
    )
    other.refresh_from_db()
    assert foo.names(foo.range(None, "master", user=other)) == ["C3"]


def test_broken_repository_raises_instead_of_returning_nothing(foo: Foo) -> None:
    (foo.bare / "HEAD").write_text("garbage\n")
    with pytest.raises(RepositoryUnusable):
        foo.range(None, "master")
    (foo.bare / "HEAD").unlink()
    with pytest.raises(RepositoryUnusable, match="no local repository"):
        foo.range(None, "master")


# --- Nothing a user sends is ever executed ----------------------------------------------------


def payloads(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"--upload-pack=touch {m}",
        f"--upload-pack=touch${{IFS}}{m}",
        f"--output={m}",
        "-h",
        "--help",
        f"$(touch {m})",
        f"$(touch${{IFS}}{m})",
        f"a$(touch${{IFS}}{m})",
        f";touch {m}",
        f"a;touch${{IFS}}{m}",
        f"`touch {m}`",
        f"a`touch${{IFS}}{m}`",
        f"|touch {m}",
        f"a|touch${{IFS}}{m}",
        f"a&&touch${{IFS}}{m}",
        f"a\ntouch {m}",
        "master^",
        "HEAD~1",
        "tag1..master",
        "master@{1}",
        "@{-1}",
        "x.lock",
        "master/",
        "master master",
        "master:file.txt",
        ":/C2",
        "'master'",
        '"master"',
        "master\\",
    ]


def test_injection_attempts_as_refs(foo: Foo, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    everything = foo.range("tag1", "b1")
    for payload in payloads(marker):
        assert foo.range(None, payload) == [], payload
        assert foo.range(payload, "master") == [], payload
        # Refused (empties the call), or a well-formed name that matches nothing (ignored).
        assert foo.range("tag1", "b1", [payload]) == (
            [] if not check_ref_format(payload) else everything
        ), payload
        assert foo.range(payload, payload, [payload]) == [], payload
    for path in (marker, Path("marker"), foo.bare / "marker"):
        assert not path.exists()


def test_injection_attempts_as_repository_names(foo: Foo, tmp_path: Path, settings: Any) -> None:
    marker = tmp_path / "marker"
    for payload in payloads(marker):
        with pytest.raises(RepositoryUnusable, match="Repository not found"):
            foo.range(None, "master", repo=payload)
    assert not marker.exists()
    assert not (Path(settings.CRUNCH_GIT_DIR) / "remote").exists()


# --- Remote repositories ----------------------------------------------------------------------


@pytest.fixture
def served(api: Any, active: tuple[Any, str], tmp_path: Path, live_server: Any) -> Iterator[Foo]:
    """`active/foo`, served over git HTTP by the live server."""
    yield make_foo(api, active, tmp_path)
    join_server_threads()


def url_of(live_server: Any, token: str, *, user: str = "x") -> str:
    netloc = urlsplit(live_server.url).netloc
    return f"http://{user}:{token}@{netloc}/git/active/foo.git"


def test_remote_http_repository(
    served: Foo, live_server: Any, make_user: Any, settings: Any
) -> None:
    ex = served.example
    stranger, _ = make_user("stranger")  # no permission check applies to remote URLs
    url = url_of(live_server, served.token)
    assert served.names(served.range("tag1", "b1", repo=url, user=stranger)) == ["C4", "C3", "C2"]
    assert served.names(served.range(None, "tag1", repo=url)) == ["C2"]
    # The cache's HEAD is its default branch, master (the remote's HEAD is b1).
    assert served.names(served.range(None, None, repo=url)) == ["C3"]
    cache = (
        Path(settings.CRUNCH_GIT_DIR) / "remote" / (hashlib.sha1(url.encode()).hexdigest() + ".git")
    )
    assert cache == git.remote_cache_path(url)
    assert sorted(p.name for p in cache.parent.glob("*.git")) == [cache.name]

    # One cache per URL.
    other_url = url_of(live_server, served.token, user="y")
    assert served.names(served.range(None, "master", repo=other_url)) == ["C3"]
    assert len(list(cache.parent.glob("*.git"))) == 2

    # Every call fetches, with force and prune.
    ex.git("checkout", "-q", "b1")
    c5 = ex.commit("C5", 1_500_000_240)
    ex.git("push", "-q", str(served.bare), "b1")
    served.bare_git("branch", "-D", "master")
    served.bare_git("update-ref", "refs/tags/tag1", ex.c1)
    assert served.range(None, "b1", repo=url) == [c5]
    assert served.range(None, "master", repo=url) == []
    assert served.names(served.range(None, "tag1", repo=url)) == ["C1"]

    # Tagging from a remote uses its cache.
    git.tag_in_internal_repository(url, c5, "zzzzz-8i9sb-remotetag000001")
    internal = git.internal_repository_path()
    assert in_bare(ex.env, internal, "rev-parse", "zzzzz-8i9sb-remotetag000001").strip() == c5


def test_path_exists_in_a_remote_repository_uses_its_cache(served: Foo, live_server: Any) -> None:
    ex = served.example
    url = url_of(live_server, served.token)
    with pytest.raises(RepositoryUnusable, match="no local repository"):
        git.path_exists(user=None, repo=url, commit=ex.c1, path="crunch_scripts/hash")
    assert served.range(None, "master", repo=url)  # resolving fetches into the cache
    assert git.path_exists(user=None, repo=url, commit=ex.c3, path="crunch_scripts/hash")
    assert not git.path_exists(user=None, repo=url, commit=ex.c3, path="crunch_scripts/nope")


def test_remote_failures_raise(served: Foo, live_server: Any, tmp_path: Path) -> None:
    bad_token = "0" * 50
    url = url_of(live_server, bad_token)
    with pytest.raises(RepositoryUnusable, match="git fetch from") as raised:
        served.range(None, "master", repo=url)
    assert bad_token not in str(raised.value)
    marker = tmp_path / "marker"
    netloc = urlsplit(live_server.url).netloc
    for url in (
        "http://127.0.0.1:1/x.git",
        "git://127.0.0.1:1/x.git",
        "https://127.0.0.1:1/x.git",
        f"http://{netloc}/git/active/nosuch.git",
        f"http://127.0.0.1:1/$(touch {marker}).git",
        f"http://127.0.0.1:1/x.git --upload-pack=touch {marker}",
        f"http://--upload-pack=touch{marker}/x.git",
        f"http://127.0.0.1:1/x.git\n--upload-pack=touch {marker}",
    ):
        with pytest.raises(RepositoryUnusable):
            served.range(None, "master", repo=url)
    assert not marker.exists()


def test_remote_tag_needs_a_cache(foo: Foo) -> None:
    with pytest.raises(RepositoryUnusable, match="no local repository"):
        git.tag_in_internal_repository("http://127.0.0.1:1/x.git", foo.example.c1, "t")


# --- Paths in a commit ------------------------------------------------------------------------


def test_path_exists(foo: Foo) -> None:
    ex = foo.example
    ex.git("checkout", "-q", "b1")
    (ex.work / "crunch_scripts" / "later").write_text("#!/bin/sh\n")
    (ex.work / "crunch_scripts" / "sub").mkdir()
    (ex.work / "crunch_scripts" / "sub" / "x").write_text("x\n")
    c5 = ex.commit("C5", 1_500_000_240)  # commits file.txt, then the rest below
    ex.git("add", "crunch_scripts")
    ex.git("commit", "-q", "-m", "scripts")
    c6 = ex.git("rev-parse", "HEAD").stdout.strip()
    ex.git("push", "-q", str(foo.bare), "b1")

    def exists(commit: str, path: str, **kw: Any) -> bool:
        return git.path_exists(
            user=kw.get("user", foo.user), repo="active/foo", commit=commit, path=path
        )

    assert exists(ex.c1, "crunch_scripts/hash") and exists(ex.c4, "file.txt")
    assert exists(c6, "crunch_scripts/later") and not exists(c5, "crunch_scripts/later")
    assert exists(c6, "crunch_scripts/sub/x")
    assert not exists(c6, "crunch_scripts/sub")  # a directory is not a file
    assert not exists(c6, "crunch_scripts")
    assert not exists(ex.c1, "crunch_scripts/nope")
    assert not exists("0" * 40, "crunch_scripts/hash")  # no such commit
    # Text that git would read as something else never becomes a lookup.
    for path in ("", "/etc/passwd", "a//b", "../x", "./x", "a\nHEAD", "a\x00b", "x/"):
        with pytest.raises(InvalidRequest, match="invalid path"):
            exists(ex.c1, path)
    for commit in ("master", "HEAD", ex.c1[:10], ex.c1 + "\n", f"{ex.c1}:file.txt"):
        with pytest.raises(InvalidRequest, match="invalid commit"):
            exists(commit, "file.txt")


def test_path_exists_checks_the_repository_like_ranges(foo: Foo, make_user: Any) -> None:
    stranger, _ = make_user("stranger")
    with pytest.raises(RepositoryUnusable, match="Repository not found"):
        git.path_exists(
            user=stranger, repo="active/foo", commit=foo.example.c1, path="crunch_scripts/hash"
        )


# --- Tagging in the internal repository -------------------------------------------------------


def test_tag_in_internal_repository(foo: Foo) -> None:
    ex = foo.example
    tag = "zzzzz-8i9sb-000000000000001"
    git.tag_in_internal_repository("active/foo", ex.c3, tag, user=foo.user)
    internal = git.internal_repository_path()
    assert in_bare(ex.env, internal, "rev-parse", f"refs/tags/{tag}").strip() == ex.c3
    assert in_bare(ex.env, internal, "rev-list", tag).split() == [ex.c3, ex.c2, ex.c1]
    # Re-pointing force-moves the tag.
    git.tag_in_internal_repository("active/foo", ex.c4, tag)
    assert in_bare(ex.env, internal, "rev-parse", f"refs/tags/{tag}").strip() == ex.c4
    git.tag_in_internal_repository("active/foo", ex.c1, tag)
    assert in_bare(ex.env, internal, "rev-parse", f"refs/tags/{tag}").strip() == ex.c1


def test_tag_in_internal_repository_errors(foo: Foo, make_user: Any) -> None:
    ex = foo.example
    for tag in ("bad tag", "x.lock", "-t", "a..b", ""):
        with pytest.raises(InvalidRequest, match="invalid tag"):
            git.tag_in_internal_repository("active/foo", ex.c3, tag)
    for sha1 in (ex.c3.upper(), ex.c3[:39], "master", f"{ex.c3}\n", None):
        with pytest.raises(InvalidRequest, match="invalid sha1"):
            git.tag_in_internal_repository("active/foo", sha1, "t1")  # type: ignore[arg-type]
    with pytest.raises(RepositoryUnusable):
        git.tag_in_internal_repository("active/foo", "1" * 40, "t1")
    with pytest.raises(RepositoryUnusable, match="Repository not found"):
        git.tag_in_internal_repository("bogus/repo", ex.c3, "t1")
    other, _ = make_user("other")
    with pytest.raises(RepositoryUnusable, match="Repository not found"):
        git.tag_in_internal_repository("active/foo", ex.c3, "t1", user=other)


def test_git_env_hides_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARVADOS_API_TOKEN", "secret")
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    env = git.git_env()
    assert "ARVADOS_API_TOKEN" not in env
    assert "GIT_DIR" not in env
    assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_repository_names_are_matched_whole() -> None:
    assert git.name_errors("active/foo") == []
    assert git.name_errors("active/foo\n") != []  # "$" alone would let a newline through
