"""Sort keys for dpkg, rpm and semver versions: tuples Python compares in C.

The maintained implementations (python-debian's `Version`, univers' `RpmVersion` and
`SemverVersion`) compare in Python on every call: 50-120 us per comparison here, which made
matching 1,000 packages against 100,000 records take seconds (bench/scan_analysis.py). These
functions turn a version into a tuple once (cached by the caller), and the tests check with
Hypothesis that their order is the maintained library's order on generated versions
(tests/unit/scanner_analysis/test_versions.py), so the libraries stay the reference.
"""

from __future__ import annotations

import re

# --- dpkg: epoch, then upstream and revision by dpkg's verrevcmp ----------------------------------

_DPKG_PART = re.compile(r"([^0-9]*)([0-9]*)")
_DPKG_EPOCH = re.compile(r"^(\d+):")
_DPKG_VALID = re.compile(r"^[0-9][A-Za-z0-9.+~:-]*$")


def _dpkg_weight(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _verrev_key(text: str) -> tuple[tuple[tuple[int, ...], int], ...]:
    """verrevcmp as a key: (non-digit run weights + end marker, digit run value) pairs.

    A string that has ended behaves as endless ("", 0) pairs in verrevcmp; the final `((0,), 0)`
    stands for them. Only a leading pair can equal it (later non-digit runs are non-empty), so
    the empty string is keyed as "0", which verrevcmp treats as equal to it.
    """
    pairs: list[tuple[tuple[int, ...], int]] = []
    for letters, digits in _DPKG_PART.findall(text or "0"):
        if not letters and not digits:
            continue
        pairs.append(((*map(_dpkg_weight, letters), 0), int(digits or 0)))
    pairs.append(((0,), 0))
    return tuple(pairs)


def dpkg_key(version: str) -> tuple[object, ...]:
    """The order of `dpkg --compare-versions`; raises ValueError for strings dpkg would reject."""
    version = version.strip()
    epoch = 0
    match = _DPKG_EPOCH.match(version)
    if match:
        epoch = int(match.group(1))
        version = version[match.end() :]
    if not _DPKG_VALID.match(version):
        raise ValueError(f"not a dpkg version: {version!r}")
    upstream, _, revision = version.rpartition("-") if "-" in version else (version, "", "")
    return (epoch, _verrev_key(upstream), _verrev_key(revision))


# --- rpm: rpmvercmp on version and release, after the epoch ------------------------------------------

_RPM_TOKEN = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")
_RPM_TILDE, _RPM_END, _RPM_CARET, _RPM_ALPHA, _RPM_NUM = 0, 1, 2, 3, 4


def _rpmvercmp_key(text: str) -> tuple[tuple[int | str, ...], ...]:
    """rpmvercmp as a key: `~` < end < `^` < alphabetic run < numeric run; separators skipped."""
    tokens: list[tuple[int | str, ...]] = []
    for token in _RPM_TOKEN.findall(text):
        if token == "~":  # noqa: S105  # a version token, not a secret
            tokens.append((_RPM_TILDE,))
        elif token == "^":  # noqa: S105
            tokens.append((_RPM_CARET,))
        elif token.isdigit():
            tokens.append((_RPM_NUM, int(token)))
        else:
            tokens.append((_RPM_ALPHA, token))
    tokens.append((_RPM_END,))
    return tuple(tokens)


def rpm_key(evr: str) -> tuple[object, ...]:
    """Order of `rpm -q --qf` EVRs (`[epoch:]version[-release]`), as rpm's rpmvercmp compares them."""
    epoch_text, sep, rest = evr.partition(":")
    if not sep:
        epoch_text, rest = "0", evr
    if not epoch_text.isdigit() or not rest:
        raise ValueError(f"not an rpm EVR: {evr!r}")
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return (int(epoch_text), _rpmvercmp_key(version), _rpmvercmp_key(release))


# --- semver 2.0.0 precedence ------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def semver_key(version: str) -> tuple[object, ...]:
    """Semver 2.0.0 precedence: a release sorts after its pre-releases; build metadata is ignored."""
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"not a semver version: {version!r}")
    major, minor, patch, pre = match.groups()
    if pre is None:
        pre_key: tuple[object, ...] = (1,)
    else:
        # numeric identifiers sort below alphanumeric ones; more identifiers sort higher
        pre_key = (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return (int(major), int(minor), int(patch), pre_key)
