#!/usr/bin/env python3
"""
Webmail speed: the message-list page of a 100,000-message folder and the
view of a 100 KB message, over real HTTP from a real ``twistd pymail``
process (Maildir storage).

    python benchmarks/web_bench.py                 # 100,000 messages, 20 requests each
    python benchmarks/web_bench.py -n 20000 --requests 50 --json results.jsonl

The folder is written straight into the account's Maildir before the
server starts (as another program would leave it), so the first request
includes the server's scan of the folder; that cold figure is printed
apart from the steady-state ones.  Targets (issue 8): list page <= 100 ms,
message view <= 50 ms.  Only loopback traffic; bounded by --count,
--requests and --max-seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PymailProcess, free_port  # noqa: E402

import anchors  # noqa: E402

USER, PASSWORD = "bench@localhost", "bench-password"
LIST_TARGET_MS, VIEW_TARGET_MS = 100.0, 50.0


def progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{text:<70}")
        sys.stderr.flush()


def fill_maildir(root: Path, count: int) -> None:
    """``count`` small messages in Maildir's cur/ (90% seen) and new/ (LF line endings)."""
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    base = 1_700_000_000
    for n in range(count):
        seen = n % 10 != 0
        name = f"{base + n}.M{n}P1.bench" + (":2,S" if seen else "")
        body = (f"From: Sender {n % 500} <sender{n % 500}@remote.example>\n"
                f"To: {USER}\nSubject: benchmark message {n}\n"
                f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(base + n))}\n"
                f"Message-ID: <{n}@bench.example>\n\n" + "Some text of the message.\n" * 8)
        path = root / ("cur" if seen else "new") / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body.encode())
        os.close(fd)
        os.utime(path, (base + n, base + n))
        if n % 5000 == 0:
            progress(f"writing messages: {n}/{count}")
    progress("")


def wait_for_port(proc: PymailProcess, port: int) -> None:
    """Wait (bounded) until the server accepts connections on loopback ``port``."""
    assert proc.proc is not None
    server = proc.proc
    anchors.wait_listening([port], anchors.START_TIMEOUT_S, lambda: server.poll() is None)


class Client:
    """One browser-like HTTP/1.1 keep-alive connection with cookies."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, fields: dict[str, str] | None = None
                ) -> tuple[int, bytes]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if fields is not None:
            body = urlencode(fields)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, data

    def sign_in(self) -> None:
        _, page = self.request("GET", "/signin")
        token = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
        status, _ = self.request("POST", "/signin", {"csrf": token, "username": USER,
                                                     "password": PASSWORD})
        if status != 303:
            raise SystemExit(f"sign-in failed with HTTP {status}")


def timed(client: Client, path: str, requests: int, deadline: float) -> list[float]:
    times = []
    for _ in range(requests):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        status, _ = client.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
    return times


def big_message(kind: str, size: int) -> bytes:
    line = "The quick brown fox jumps over the lazy dog, again and again. "
    text = (line * (size // len(line) + 1))[:size]
    if kind == "html":
        parts = "".join(f"<p>{text[i:i + 500]}</p>\r\n" for i in range(0, size, 500))
        ctype, body = "text/html; charset=utf-8", parts
    else:
        body = "\r\n".join(text[i:i + 76] for i in range(0, size, 76))
        ctype = "text/plain; charset=utf-8"
    return (f"From: Big <big@remote.example>\r\nTo: {USER}\r\nSubject: big {kind}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n{body}\r\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/web_bench.py -n 100000")
    parser.add_argument("-n", "--count", type=int, default=100_000,
                        help="messages in the folder (default 100000)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per figure")
    parser.add_argument("--size", type=int, default=100_000, help="size of the viewed message")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop timing after this")
    parser.add_argument("--json", help="append one JSON line per figure to this file")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="pymail-web-bench-") as tmp:
        port = free_port()
        proc = PymailProcess(Path(tmp), extra_config=(
            f'[web]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'), users={USER: PASSWORD})
        fill_maildir(proc.data_dir / "mail" / "localhost" / "bench", args.count)
        proc.start()
        try:
            wait_for_port(proc, port)
            client = Client(port)
            client.sign_in()
            progress("first request (the server scans the folder)...")
            cold = timed(client, "/mail/INBOX", 1, deadline)[0]
            progress("")
            searches: dict[str, list[float]] = {}
            figures = {
                "list page 0 (newest 50)": timed(client, "/mail/INBOX", args.requests, deadline),
                "list page 1000": timed(client, "/mail/INBOX?page=1000", args.requests, deadline),
            }
            after_new: list[float] = []
            with smtplib.SMTP("127.0.0.1", proc.ports["smtp"], timeout=60) as smtp:
                # New mail changes the folder: the next page re-sorts it.
                for n in range(min(args.requests, 10)):
                    smtp.sendmail("new@remote.example", [USER],
                                  f"Subject: new {n}\r\n\r\nnew\r\n".encode())
                    time.sleep(0.05)  # the delivery reaches the server's view
                    after_new += timed(client, "/mail/INBOX", 1, deadline)
            figures["list page 0 right after new mail"] = after_new
            with smtplib.SMTP("127.0.0.1", proc.ports["smtp"], timeout=60) as smtp:
                for kind in ("text", "html"):
                    smtp.sendmail("big@remote.example", [USER], big_message(kind, args.size))
            _, page = client.request("GET", "/mail/INBOX")
            uids = re.findall(rb'data-uid="([0-9]+)"', page)[:2]
            html_uid, text_uid = (u.decode() for u in uids)
            client.request("GET", f"/mail/INBOX/{text_uid}")  # marks it seen once
            client.request("GET", f"/mail/INBOX/{html_uid}")
            figures[f"view {args.size // 1000} KB text message"] = timed(
                client, f"/mail/INBOX/{text_uid}", args.requests, deadline)
            figures[f"view {args.size // 1000} KB HTML message (page)"] = timed(
                client, f"/mail/INBOX/{html_uid}", args.requests, deadline)
            figures[f"view {args.size // 1000} KB HTML message (sanitised frame)"] = timed(
                client, f"/mail/INBOX/{html_uid}/html", args.requests, deadline)
            # Search every folder by subject for a term no message has (a full
            # scan): the first computes each summary once and keeps it in the
            # index; the later ones read only the index.
            search = "/search?folder=&field=subject&q=no-such-subject-zq"
            progress("first all-folder search (summaries computed into the index)...")
            searches["search all folders by subject, first"] = timed(client, search, 1,
                                                                     deadline)
            progress("")
            searches["search all folders by subject, from the index"] = timed(
                client, search, min(args.requests, 5), deadline)
        finally:
            proc.stop()
    print(f"webmail, {args.count} messages in INBOX (Maildir), {args.requests} requests each, "
          "HTTP/1.1 keep-alive over loopback")
    print(f"  {'first list page (includes the folder scan)':<50} {cold:9.1f} ms")
    rows = []
    for name, times in figures.items():
        median = statistics.median(times)
        p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
        target = LIST_TARGET_MS if name.startswith("list") else VIEW_TARGET_MS
        verdict = "ok" if median <= target else "OVER TARGET"
        print(f"  {name:<50} median {median:7.1f} ms  p95 {p95:7.1f} ms  "
              f"(target {target:.0f} ms: {verdict})")
        rows.append({"benchmark": "web", "figure": name, "messages": args.count,
                     "median_ms": round(median, 2), "p95_ms": round(p95, 2),
                     "target_ms": target})
    for name, times in searches.items():
        median = statistics.median(times)
        print(f"  {name:<50} median {median:7.1f} ms  ({len(times)} request(s), no target)")
        rows.append({"benchmark": "web", "figure": name, "messages": args.count,
                     "median_ms": round(median, 2)})
    if args.json:
        with open(args.json, "a") as f:
            for row in rows + [{"benchmark": "web", "figure": "first list page",
                                "messages": args.count, "ms": round(cold, 1)}]:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
