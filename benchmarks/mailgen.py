#!/usr/bin/env python3
"""
Deterministic, seeded generator of realistic mail, written as Maildir or mbox
so every server under test serves byte-for-byte the same messages.

    python benchmarks/mailgen.py maildir /tmp/box -n 10000 --seed 1
    python benchmarks/mailgen.py mbox /tmp/box.mbox -n 1000
    python benchmarks/mailgen.py sample --size 4096      # one message to stdout

Messages are a mix of text/plain, multipart/alternative (text + HTML) and
multipart/mixed with a base64 attachment, with realistic headers (Received,
Message-ID, Date, From/To/Cc, Subject with searchable words).  The same seed
and count always give the same bytes, file names and modification times
(INTERNALDATE), so the output can be compared across runs and servers.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

DEFAULT_SEED = 20261127
# Every message is dated from here on, one every EPOCH_STEP_S seconds.
EPOCH = datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc)
EPOCH_STEP_S = 97
# Words a SEARCH benchmark looks for: SUBJECT_WORD is in the Subject of about
# one message in SUBJECT_EVERY, BODY_WORD in the body of one in BODY_EVERY.
SUBJECT_WORD = "quarterly"
SUBJECT_EVERY = 50
BODY_WORD = "zanzibar"
BODY_EVERY = 40
# Size mix of a folder (octets, LF form): most mail is small, some is large.
FOLDER_SIZES = ((0.55, 2_000, 6_000), (0.35, 6_000, 20_000), (0.09, 20_000, 120_000),
                (0.01, 120_000, 600_000))

_WORDS = (
    "the of and to in is that for it as with was on be by at this have from or an "
    "meeting report budget review project release server mail message queue index "
    "deadline customer invoice schedule update please thanks regards attached draft "
    "question answer network storage backup restore deploy version patch issue team "
    "monday tuesday friday office travel lunch agenda minutes notes summary proposal"
).split()
_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy".split()
_LAST = "Smith Jones Brown Taylor Wilson Davies Evans Thomas Johnson Roberts Walker".split()
_DOMAINS = ("example.com", "example.net", "lists.example.org", "corp.example")
_MAILERS = ("Mozilla Thunderbird 128.3", "Apple Mail (2.3774)", "K-9 Mail 6.8", "mutt 2.2.12")


def _name(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}"


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _paragraphs(rng: random.Random, target: int, extra_word: str | None) -> str:
    """Plain text of about ``target`` characters, wrapped at 72 columns."""
    lines: list[str] = []
    size = 0
    line = ""
    while size < target:
        for word in _sentence(rng, rng.randint(6, 16)).split():
            if len(line) + len(word) + 1 > 72:
                lines.append(line)
                size += len(line) + 1
                line = ""
            line = f"{line} {word}" if line else word
        if rng.random() < 0.15:
            lines.append(line)
            lines.append("")
            size += len(line) + 2
            line = ""
    if line:
        lines.append(line)
    if extra_word:
        lines.insert(len(lines) // 2, f"Ref: {extra_word} shipment")
    return "\n".join(lines) + "\n"


def _b64(rng: random.Random, octets: int) -> str:
    raw = rng.randbytes(octets)
    enc = base64.b64encode(raw).decode()
    return "\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + "\n"


def make_message(n: int, size: int, seed: int = DEFAULT_SEED, to: str = "bench@example.org") -> bytes:
    """
    Message number ``n`` of the stream for ``seed``, about ``size`` octets
    in LF form (the Maildir and mbox form; the wire form is CRLF).
    """
    rng = random.Random(seed * 1_000_003 + n)
    date = EPOCH + timedelta(seconds=n * EPOCH_STEP_S)
    from_name, from_addr = _name(rng)
    cc_name, cc_addr = _name(rng)
    topic = " ".join(rng.choice(_WORDS[20:]) for _ in range(rng.randint(2, 5)))
    if n % SUBJECT_EVERY == 0:
        topic = f"{SUBJECT_WORD} {topic}"
    subject = rng.choice(("", "Re: ", "Fwd: ", "Re: ")) + topic.capitalize() + f" #{n}"
    body_word = BODY_WORD if n % BODY_EVERY == 7 else None
    boundary = f"=_bench_{seed}_{n}_{rng.getrandbits(32):08x}"
    header = (
        f"Return-Path: <{from_addr}>\n"
        f"Received: from mx{rng.randint(1, 9)}.{from_addr.split('@')[1]} "
        f"(mx.{from_addr.split('@')[1]} [192.0.2.{rng.randint(1, 254)}])\n"
        f"\tby mx.test.example with ESMTPS id {rng.getrandbits(48):012X}\n"
        f"\tfor <{to}>; {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        f"Message-ID: <{n}.{rng.getrandbits(40):010x}@{from_addr.split('@')[1]}>\n"
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        f"From: {from_name} <{from_addr}>\n"
        f"To: Bench User <{to}>\n"
        f"Cc: {cc_name} <{cc_addr}>\n"
        f"Subject: {subject}\n"
        f"User-Agent: {rng.choice(_MAILERS)}\n"
        "MIME-Version: 1.0\n"
    )
    room = max(200, size - len(header) - 300)
    kind = rng.random() if size < 30_000 else 0.9
    if kind < 0.5:
        body = ("Content-Type: text/plain; charset=utf-8; format=flowed\n"
                "Content-Transfer-Encoding: 7bit\n\n" + _paragraphs(rng, room, body_word))
    elif kind < 0.8:
        text = _paragraphs(rng, room // 3, body_word)
        html_room = room - len(text) - 200
        html_text = _paragraphs(rng, max(100, html_room - 60), None).replace("\n\n", "</p>\n<p>")
        html = f"<html><body>\n<p>{html_text}</p>\n</body></html>\n"
        body = (f'Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
                f"This is a multi-part message in MIME format.\n"
                f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
                f"Content-Transfer-Encoding: 7bit\n\n{text}\n"
                f"--{boundary}\nContent-Type: text/html; charset=utf-8\n"
                f"Content-Transfer-Encoding: 7bit\n\n{html}\n--{boundary}--\n")
    else:
        text = _paragraphs(rng, min(1_500, room // 4), body_word)
        attach = max(60, (room - len(text) - 300) * 3 // 4)
        fname = rng.choice(("report.pdf", "photo.jpg", "data.xlsx", "scan.png"))
        body = (f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
                f"This is a multi-part message in MIME format.\n"
                f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n"
                f"Content-Transfer-Encoding: 7bit\n\n{text}\n"
                f"--{boundary}\nContent-Type: application/octet-stream; name=\"{fname}\"\n"
                f"Content-Disposition: attachment; filename=\"{fname}\"\n"
                f"Content-Transfer-Encoding: base64\n\n{_b64(rng, attach)}\n--{boundary}--\n")
    return (header + body).encode()


def folder_size(n: int, seed: int = DEFAULT_SEED) -> int:
    """The target size of message ``n`` of a folder (the FOLDER_SIZES mix)."""
    rng = random.Random(seed * 7 + n)
    pick = rng.random()
    for share, low, high in FOLDER_SIZES:
        if pick < share:
            return rng.randint(low, high)
        pick -= share
    return FOLDER_SIZES[0][1]


def folder_messages(count: int, seed: int = DEFAULT_SEED,
                    to: str = "bench@example.org") -> Iterator[tuple[int, bytes]]:
    """The messages of a generated folder: (number, LF bytes)."""
    for n in range(count):
        yield n, make_message(n, folder_size(n, seed), seed, to)


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def write_maildir(path: Path, count: int, seed: int = DEFAULT_SEED,
                  to: str = "bench@example.org", progress: bool = False) -> int:
    """
    Write ``count`` messages into the Maildir at ``path`` (cur/, no flags),
    named ``<time>.M<n>P0.bench,S=<size>,W=<wire size>:2,`` with the
    message's date as modification time.  Returns the octets written.
    """
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    for n, data in folder_messages(count, seed, to):
        stamp = int((EPOCH + timedelta(seconds=n * EPOCH_STEP_S)).timestamp())
        wire_octets = len(data) + data.count(b"\n")
        name = f"{stamp}.M{n}P0.bench,S={len(data)},W={wire_octets}:2,"
        target = path / "cur" / name
        target.write_bytes(data)
        os.utime(target, (stamp, stamp))
        total += len(data)
        if progress and sys.stderr.isatty() and (n % 500 == 0 or n == count - 1):
            sys.stderr.write(f"\rmaildir {path}: {n + 1}/{count}")
            if n == count - 1:
                sys.stderr.write("\n")
    return total


def write_mbox(path: Path, count: int, seed: int = DEFAULT_SEED,
               to: str = "bench@example.org") -> int:
    """Write ``count`` messages as one mboxrd file (``>From`` quoting)."""
    total = 0
    with open(path, "wb") as f:
        for n, data in folder_messages(count, seed, to):
            date = EPOCH + timedelta(seconds=n * EPOCH_STEP_S)
            f.write(f"From bench@example.com {date.strftime('%a %b %d %H:%M:%S %Y')}\n".encode())
            for line in data.splitlines(keepends=True):
                stripped = line.lstrip(b">")
                if stripped.startswith(b"From "):
                    line = b">" + line
                f.write(line)
            if not data.endswith(b"\n"):
                f.write(b"\n")
            f.write(b"\n")
            total += len(data)
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=("maildir", "mbox", "sample"))
    parser.add_argument("path", nargs="?", help="Maildir directory or mbox file")
    parser.add_argument("-n", "--count", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--size", type=int, default=4096, help="size for 'sample'")
    args = parser.parse_args(argv)
    if args.format == "sample":
        sys.stdout.buffer.write(make_message(0, args.size, args.seed))
        return 0
    if not args.path:
        parser.error("a path is needed for maildir and mbox")
    if args.format == "maildir":
        octets = write_maildir(Path(args.path), args.count, args.seed, progress=True)
    else:
        octets = write_mbox(Path(args.path), args.count, args.seed)
    print(f"{args.count} messages, {octets} octets -> {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
