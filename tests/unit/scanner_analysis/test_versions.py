"""Version order per ecosystem: properties over generated versions (Hypothesis, "ci" profile)."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.analysis import versions

pytestmark = pytest.mark.unit

nums = st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=4)
dotted = nums.map(lambda parts: ".".join(map(str, parts)))
word = st.text(alphabet="abcdefghij", min_size=1, max_size=4)


def lt(scheme: str, a: str, b: str) -> bool:
    return versions.compare(scheme, a, b) < 0


def _is_total_order(scheme: str, items: list[str]) -> None:
    for a in items:
        for b in items:
            ab, ba = versions.compare(scheme, a, b), versions.compare(scheme, b, a)
            assert ab == -ba
    ordered = sorted(items, key=functools.cmp_to_key(lambda x, y: versions.compare(scheme, x, y)))
    for x, y in zip(ordered, ordered[1:], strict=False):
        assert versions.compare(scheme, x, y) <= 0


# --- dpkg ------------------------------------------------------------------------------------


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, word, st.integers(1, 20))
def test_dpkg_tilde_sorts_before_the_release_and_after_the_previous_revision(upstream: str, tag: str, rev: int) -> None:
    assert lt("Debian", f"{upstream}~{tag}-{rev}", f"{upstream}-{rev}")
    assert lt("Debian", f"{upstream}-{rev}~deb12u1", f"{upstream}-{rev}")
    assert lt("Debian", f"{upstream}-{rev}", f"{upstream}-{rev}+b1")
    assert lt("Debian", f"{upstream}-{rev}", f"{upstream}-{rev + 1}")


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, dotted, st.integers(1, 5))
def test_dpkg_epoch_dominates(a: str, b: str, epoch: int) -> None:
    assert lt("Ubuntu", f"{b}-1", f"{epoch}:{a}-1")
    assert versions.compare("Debian", f"0:{a}-1", f"{a}-1") == 0


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(nums, nums)
def test_dpkg_numeric_components_compare_as_numbers(a: list[int], b: list[int]) -> None:
    sa, sb = ".".join(map(str, a)), ".".join(map(str, b))
    expected = (a > b) - (a < b)  # list order: a longer list with an equal prefix is greater, as in dpkg
    assert versions.compare("Debian", sa, sb) == expected


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(
    st.lists(
        st.tuples(st.integers(0, 2), dotted, st.sampled_from(["", "~rc1", "+dfsg"]), st.integers(1, 3)), max_size=6
    )
)
def test_dpkg_is_a_total_order(parts: list[tuple[int, str, str, int]]) -> None:
    _is_total_order("Debian", [f"{e}:{u}{s}-{r}" for e, u, s, r in parts])


# --- apk ---------------------------------------------------------------------------------------

apk_suffix = st.sampled_from(
    ["", "_alpha1", "_beta2", "_pre1", "_rc3", "_cvs1", "_svn2", "_git20230717", "_hg1", "_p2"]
)


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, st.integers(0, 30), st.integers(0, 30))
def test_apk_revisions_compare_as_numbers(v: str, r1: int, r2: int) -> None:
    assert versions.compare("Alpine", f"{v}-r{r1}", f"{v}-r{r2}") == (r1 > r2) - (r1 < r2)


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(
    dotted,
    st.sampled_from(["_alpha", "_beta", "_pre", "_rc"]),
    st.sampled_from(["_cvs", "_svn", "_git", "_hg", "_p"]),
    st.integers(0, 99),
)
def test_apk_pre_release_below_release_below_post_release_below_next(v: str, pre: str, post: str, n: int) -> None:
    assert lt("Alpine", f"{v}{pre}{n}-r9", f"{v}-r0")
    assert lt("Alpine", f"{v}-r9", f"{v}{post}{n}-r0")
    assert lt("Alpine", f"{v}{post}{n}-r9", f"{v}.1-r0")
    assert lt("Alpine", f"{v}-r9", f"{v}a-r0")


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(st.lists(st.tuples(dotted, apk_suffix, st.integers(0, 12)), max_size=6))
def test_apk_is_a_total_order(parts: list[tuple[str, str, int]]) -> None:
    _is_total_order("Alpine", [f"{v}{s}-r{r}" for v, s, r in parts])


def test_apk_rejects_what_is_not_an_apk_version() -> None:
    with pytest.raises(versions.UnorderedVersion):
        versions.key("Alpine", "1.0-beta")


# --- rpm, PEP 440, semver, Go, Maven -------------------------------------------------------------


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, dotted, st.integers(1, 5))
def test_rpm_epoch_dominates_and_tilde_sorts_first(a: str, b: str, epoch: int) -> None:
    assert lt("Red Hat", f"{b}-1.el9", f"{epoch}:{a}-1.el9")
    assert lt("Rocky Linux", f"{a}~rc1-1.el9", f"{a}-1.el9")
    assert versions.compare("AlmaLinux", f"0:{a}-1.el9", f"{a}-1.el9") == 0


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, st.integers(1, 9))
def test_pep440_pre_below_final_below_post(v: str, n: int) -> None:
    assert lt("PyPI", f"{v}rc{n}", v)
    assert lt("PyPI", f"{v}a{n}", f"{v}b{n}")
    assert lt("PyPI", v, f"{v}.post{n}")
    assert versions.compare("PyPI", f"{v}.0", v) == 0  # trailing zeros do not count


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(
    st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
    st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
)
def test_semver_orders_like_its_numeric_triple(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    sa, sb = ".".join(map(str, a)), ".".join(map(str, b))
    expected = (a > b) - (a < b)
    assert versions.compare("npm", sa, sb) == expected
    assert versions.compare("Go", f"v{sa}", f"v{sb}") == expected
    assert lt("npm", f"{sa}-rc.1", sa)


def test_go_toolchain_and_module_versions() -> None:
    assert versions.compare("Go", "v1.2.3", "1.2.3") == 0
    assert lt("Go", "go1.21rc2", "go1.21.0")
    assert versions.compare("Go", "go1.21", "go1.21.0") == 0
    assert lt("Go", "go1.21.0", "go1.21.3")
    assert lt("Go", "v0.0.0-20230101000000-abcdefabcdef", "v0.1.0")  # pseudo-versions are pre-releases


@settings(max_examples=50)  # cheap per example; keeps the module near 4 s
@given(dotted, st.integers(1, 9))
def test_maven_qualifiers(v: str, n: int) -> None:
    assert lt("Maven", f"{v}-alpha-{n}", v)
    assert lt("Maven", f"{v}-beta-{n}", f"{v}-rc-{n}")
    assert lt("Maven", f"{v}-SNAPSHOT", v)
    assert lt("Maven", v, f"{v}.1")


def test_unknown_ecosystem_has_no_order() -> None:
    with pytest.raises(versions.UnorderedVersion):
        versions.key("Hackage", "1.0")


# --- the tuple keys (sortkeys.py) order exactly as the maintained libraries do ----------------------

from debian.debian_support import version_compare as debian_compare  # noqa: E402
from univers.versions import RpmVersion, SemverVersion  # noqa: E402

from scanner.analysis import sortkeys  # noqa: E402


def _sign(a: object, b: object) -> int:
    return (b < a) - (a < b)  # type: ignore[operator]


dpkg_upstream = st.builds(
    lambda head, tail: head + tail,
    st.text(alphabet="0123456789", min_size=1, max_size=3),
    st.text(alphabet="0123456789abzAZ.+~", max_size=8),
)
dpkg_revision = st.text(alphabet="0123456789abz.+~", min_size=1, max_size=6)
dpkg_version = st.builds(
    lambda epoch, upstream, revision: (
        (f"{epoch}:" if epoch is not None else "") + upstream + (f"-{revision}" if revision else "")
    ),
    st.none() | st.integers(0, 3),
    dpkg_upstream,
    st.none() | dpkg_revision,
)


@settings(max_examples=150)  # each is checked against the library on every run
@given(dpkg_version, dpkg_version)
def test_dpkg_key_orders_as_python_debian(a: str, b: str) -> None:
    expected = debian_compare(a, b)
    assert _sign(sortkeys.dpkg_key(a), sortkeys.dpkg_key(b)) == (expected > 0) - (expected < 0)


rpm_part = st.text(alphabet="0123456789abAB.~^_", min_size=1, max_size=8).filter(lambda s: any(c.isalnum() for c in s))
rpm_evr = st.builds(
    lambda epoch, version, release: (
        (f"{epoch}:" if epoch is not None else "") + version + (f"-{release}" if release else "")
    ),
    st.none() | st.integers(0, 3),
    rpm_part,
    st.none() | rpm_part,
)


@settings(max_examples=150)  # each is checked against the library on every run
@given(rpm_evr, rpm_evr)
def test_rpm_key_orders_as_univers(a: str, b: str) -> None:
    assert _sign(sortkeys.rpm_key(a), sortkeys.rpm_key(b)) == _sign(RpmVersion(a), RpmVersion(b))


identifier = st.integers(0, 999).map(str) | st.builds(
    lambda head, tail: head + tail, st.sampled_from("abrz"), st.text(alphabet="abc0-9", max_size=3)
)
semver_version = st.builds(
    lambda core, pre, build: (
        ".".join(map(str, core)) + (f"-{'.'.join(pre)}" if pre else "") + (f"+{build}" if build else "")
    ),
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)),
    st.lists(identifier, max_size=3),
    st.none() | st.sampled_from(["build.1", "sha.abc"]),
)


@settings(max_examples=150)  # each is checked against the library on every run
@given(semver_version, semver_version)
def test_semver_key_orders_as_univers(a: str, b: str) -> None:
    assert _sign(sortkeys.semver_key(a), sortkeys.semver_key(b)) == _sign(SemverVersion(a), SemverVersion(b))


@pytest.mark.parametrize("bad", ["", "abc", "1.0 2", "1:", ":1.0"])
def test_dpkg_key_rejects_what_dpkg_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        sortkeys.dpkg_key(bad)
