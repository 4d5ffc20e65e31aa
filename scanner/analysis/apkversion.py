"""Alpine's apk version order, after apk-tools' `apk_version_compare`.

Written here because univers' AlpineLinuxVersion (the only PyPI implementation) rejects the
post-release suffixes `_cvs`, `_svn`, `_git` and `_hg` that aports use (musl is
`1.2.4_git20230717-r4`), and its `<=` disagrees with its `<`. A version is digit components,
an optional letter, suffixes, an optional `~commit`, and `-rN`; pre-release suffixes (`_alpha`,
`_beta`, `_pre`, `_rc`) sort before the bare version and post-release ones after it.
"""

from __future__ import annotations

import re

_PRE = ("alpha", "beta", "pre", "rc")
_POST = ("cvs", "svn", "git", "hg", "p")
_SUFFIX = "|".join(_PRE + _POST)
_VERSION = re.compile(
    rf"^(?P<nums>\d+(?:\.\d+)*)(?P<letter>[a-z])?(?P<suffixes>(?:_(?:{_SUFFIX})\d*)*)(?:~[0-9a-f]+)?(?:-r(?P<rev>\d+))?$"
)
_ONE_SUFFIX = re.compile(rf"_({_SUFFIX})(\d*)")

# Token ranks: a pre-release suffix < the end of the version < a post-release suffix < a letter < a number.
_R_PRE, _R_END, _R_POST, _R_LETTER, _R_NUM = 0, 1, 2, 3, 4


def apk_key(version: str) -> tuple[tuple[tuple[int, ...], ...], int]:
    """A sort key: token tuples compared in order (the end is a token too), then the revision."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not an apk version: {version!r}")
    tokens: list[tuple[int, ...]] = [(_R_NUM, int(n)) for n in match["nums"].split(".")]
    if match["letter"]:
        tokens.append((_R_LETTER, ord(match["letter"])))
    for name, number in _ONE_SUFFIX.findall(match["suffixes"] or ""):
        value = int(number) if number else 0
        if name in _PRE:
            tokens.append((_R_PRE, _PRE.index(name), value))
        else:
            tokens.append((_R_POST, _POST.index(name), value))
    tokens.append((_R_END,))
    return tuple(tokens), int(match["rev"] or 0)
