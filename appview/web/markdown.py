"""Repository descriptions (Markdown written by anyone) turned into HTML that is safe to embed.

Two layers, because either alone has failed somewhere before: markdown-it-py runs with raw
HTML disabled (a `<script>` in the source stays text), and its output still goes through nh3
with a short allow-list of tags, attributes and URL schemes (a `javascript:` link, an event
handler or a `style` attribute that slipped through the renderer is dropped there).

Images are not embedded: a README image from an arbitrary host would let its author track
every visitor and would need the page's CSP to allow any host. An image becomes a link to
its https URL, labelled with its alt text. Links get `rel="nofollow noopener ugc"`: the text
is user-generated and must not pass on ranking or `window.opener`.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

MAX_SOURCE: Final = 100_000
"""The lexicon's maxLength of ``description``; longer input is cut before rendering."""

ALLOWED_TAGS: Final = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "dl", "dt", "em",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "s", "strong",
        "sub", "summary", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
    }
)
ALLOWED_ATTRIBUTES: Final = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "ol": {"start"},
    "td": {"align"},
    "th": {"align"},
    "code": {"class"},
}
URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})
LINK_REL: Final = "nofollow noopener ugc"


def _image_as_link(
    renderer: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    alt = renderer.renderInlineAsText(token.children or [], options, env) or "image"
    label = f"[image: {alt}]"
    if not src.startswith("https://"):
        return _escape(label)
    return f'<a href="{_escape(src)}">{_escape(label)}</a>'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table").enable("strikethrough")
    md.add_render_rule("image", _image_as_link)
    return md


def _filter_attribute(element: str, attribute: str, value: str) -> str | None:
    """Keep only the language classes fenced code blocks get (``language-python``)."""
    if attribute == "class":
        return value if element == "code" and value.startswith("language-") and value[9:].isalnum() else None
    return value


def sanitize(html: str) -> str:
    """The final gate for any HTML that came from user input."""
    out: str = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_filter_attribute,
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    )
    return out


def render(source: str | None) -> str:
    """Markdown to sanitized HTML ("" for no description)."""
    if not source or not source.strip():
        return ""
    html: str = _parser().render(source[:MAX_SOURCE])
    return sanitize(html)


def summary(source: str | None, limit: int = 160) -> str:
    """A one-line plain-text teaser for cards: the first paragraph, Markdown markers dropped."""
    if not source:
        return ""
    tokens: list[Any] = _parser().parse(source[:4000])
    for token in tokens:
        if token.type == "inline" and token.content.strip():
            text = "".join(
                child.content for child in (token.children or []) if child.type in ("text", "code_inline")
            ).strip()
            if not text:
                continue
            return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return ""


__all__ = ["render", "sanitize", "summary"]
