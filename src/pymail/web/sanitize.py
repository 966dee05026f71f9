"""
Make the HTML part of a message safe to show: nh3 (the Python binding of
the Rust sanitiser ammonia) with an allow-list of tags, attributes, URL
schemes and CSS properties.

What is removed: scripts and their content, ``<style>`` sheets (CSS can
hide, overlay or exfiltrate), event handlers, ``javascript:``/``data:``
links, forms, frames, SVG and MathML (SVG carries scripts and remote
loads), and every remote image unless the reader asked for them: a remote
image is how a sender learns that, when and where a message was read.
Images embedded in the message (``cid:``) are inlined as ``data:`` URIs.

The result is shown in a sandboxed frame with its own strict
Content-Security-Policy (see :mod:`pymail.web.app`), so a sanitiser bug
alone does not run script.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

import attrs
import nh3

#: Tags kept (their attributes are listed in :data:`ALLOWED_ATTRIBUTES`).
ALLOWED_TAGS = frozenset({
    "a", "abbr", "address", "b", "big", "blockquote", "br", "caption", "center", "cite",
    "code", "col", "colgroup", "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1",
    "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "ol", "p", "pre",
    "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
})

#: Tags removed together with everything inside them.
REMOVED_WITH_CONTENT = frozenset({"script", "style", "title", "head", "svg", "math",
                                  "noscript", "template", "iframe", "object"})

_COMMON = {"align", "dir", "lang", "title", "style"}
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": _COMMON,
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "width", "bgcolor"},
    "td": {"colspan", "rowspan", "width", "valign", "bgcolor"},
    "th": {"colspan", "rowspan", "width", "valign", "bgcolor"},
    "col": {"span", "width"},
    "ol": {"start", "type"},
}

#: CSS properties kept in ``style`` attributes: colours and typography, no
#: positioning, no URLs (``background-image``), nothing that overlays.
ALLOWED_STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font-family", "font-size", "font-style", "font-weight",
    "text-align", "text-decoration", "line-height", "margin", "padding", "border",
    "border-collapse", "width", "vertical-align", "white-space",
})

#: URL schemes kept in links and images (``cid:`` is resolved before).
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto", "data", "cid"})

#: Largest embedded image inlined as a data: URI, in octets.
MAX_INLINE_IMAGE = 2 * 1024 * 1024


#: CSS functions a kept declaration may use (colours only).
_STYLE_FUNCTION = re.compile(r"([a-z-]*)\s*\(", re.IGNORECASE)
_COLOUR_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla"})


def _safe_style(value: str) -> str | None:
    """Drop declarations that call a CSS function other than a colour (url(), expression())."""
    kept = []
    for declaration in value.split(";"):
        functions = {f.lower() for f in _STYLE_FUNCTION.findall(declaration)}
        if functions <= _COLOUR_FUNCTIONS and "\\" not in declaration:
            kept.append(declaration.strip())
    style = ";".join(d for d in kept if d)
    return style or None


@attrs.frozen
class SanitisedHTML:
    """The safe HTML and how many remote images were held back."""

    html: str
    blocked_images: int


def sanitise_html(
    html: str,
    *,
    allow_remote_images: bool = False,
    inline_images: Mapping[str, tuple[str, bytes]] | None = None,
) -> SanitisedHTML:
    """
    Sanitise the HTML of a message for display.

    :param allow_remote_images: keep ``http(s)`` image sources (the reader
        asked to see them).
    :param inline_images: Content-ID (without angle brackets) ->
        (content type, data) of the message's embedded images; ``cid:``
        sources are replaced with ``data:`` URIs of these.
    """
    inline = {k.strip("<>").lower(): v for k, v in (inline_images or {}).items()}
    blocked = 0

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attr == "src":
            low = value.strip().lower()
            if low.startswith("cid:"):
                found = inline.get(value.strip()[4:].strip("<>").lower())
                if found is None or len(found[1]) > MAX_INLINE_IMAGE:
                    return None
                ctype, data = found
                if not ctype.startswith("image/") or ctype == "image/svg+xml":
                    return None
                return f"data:{ctype};base64," + base64.b64encode(data).decode("ascii")
            if low.startswith(("http:", "https:", "//")):
                if allow_remote_images and not low.startswith("//"):
                    return value
                blocked += 1
                return None
            if low.startswith("data:image/") and not low.startswith("data:image/svg"):
                return value
            return None
        if attr == "style":
            return _safe_style(value)
        if attr == "href":
            low = value.strip().lower()
            if not low.startswith(("http:", "https:", "mailto:")):
                return None
        return value

    clean = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(REMOVED_WITH_CONTENT),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=attribute_filter,
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        url_schemes=set(ALLOWED_SCHEMES),
        filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    return SanitisedHTML(clean, blocked)
