"""Descriptions are Markdown written by anyone: what comes out must be inert HTML."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from appview.web.markdown import render, sanitize, summary

pytestmark = pytest.mark.unit

VECTORS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<svg onload=alert(1)>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<style>body{display:none}</style>",
    "![x](javascript:alert(1))",
    "![x\" onerror=\"alert(1)](https://example.com/a.png)",
    "<details open ontoggle=alert(1)>",
    "`<script>`\n\n```html\n<script>alert(1)</script>\n```",
    "[x](https://example.com \"title\\\" onmouseover=\\\"alert(1)\")",
    "<<script>script>alert(1)<</script>/script>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
]


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def parsed(html: str) -> Collect:
    c = Collect()
    c.feed(html)
    return c


@pytest.mark.parametrize("source", VECTORS)
def test_attacks_come_out_inert(source: str) -> None:
    out = parsed(render(source))
    assert not {"script", "iframe", "style", "svg", "img", "math"} & set(out.tags), out.tags
    for name, value in out.attrs:
        assert not name.startswith("on"), (name, value)
        if name == "href":
            assert (value or "").startswith(("https://", "http://", "mailto:")), value


def test_markdown_still_renders() -> None:
    html = render("# Title\n\nSome **bold** and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n~~gone~~")
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<table>" in html and "<s>gone</s>" in html


def test_links_are_marked_user_generated() -> None:
    assert 'rel="nofollow noopener ugc"' in render("[home](https://example.com)")


def test_images_become_links_to_https_only() -> None:
    assert render("![logo](https://example.com/l.png)").count('<a href="https://example.com/l.png"') == 1
    assert "<a" not in render("![logo](http://example.com/l.png)")
    assert "[image: logo]" in render("![logo](http://example.com/l.png)")


def test_code_block_language_class_is_kept_but_nothing_else() -> None:
    assert 'class="language-python"' in render("```python\nx = 1\n```")
    assert "class" not in sanitize('<code class="evil x">y</code>')


def test_summary_is_plain_text() -> None:
    assert summary("# Title\n\nSome **bold** text") == "Title"
    assert summary("Hello <b>x</b> " + "a" * 300, limit=20).endswith("…")
    assert summary(None) == "" and render(None) == ""
