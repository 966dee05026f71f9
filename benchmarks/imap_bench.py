"""
IMAP speed on a big Maildir folder, against the real pymail process.

Writes N messages (default 10,000, corpus messages in turn) straight into
a new account's Maildir INBOX, starts ``twistd -n pymail``, warms the
folder (one SELECT and one ENVELOPE fetch, so the index and caches are
warm), then times over loopback with imaplib:

- LOGIN + SELECT
- FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)
- FETCH 1:* BODY.PEEK[] (MB/s)
- UID SEARCH SUBJECT
- STORE 1:* +FLAGS.SILENT
- IDLE push latency of an SMTP delivery
- RSS growth per idle authenticated connection (over --connections)

Example::

    /work/venv/bin/python benchmarks/imap_bench.py --messages 10000 --connections 1000

Figures to compare with (Dovecot 2.3, same kind of folder): LOGIN+SELECT
39 ms, FETCH 0.14 s, 520 MB/s, SEARCH SUBJECT 35 ms, STORE 0.16 s,
4.9 MB RSS per connection.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import resource
import smtplib
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PymailProcess, corpus_messages  # noqa: E402

from pymail.storage.maildir import MaildirStoreFactory  # noqa: E402

USER = ("bench@localhost", "bench-pw")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill(root: Path, count: int) -> int:
    corpus = [p.read_bytes() for p in corpus_messages()]
    total = 0
    now = int(time.time())
    for n in range(count):
        data = corpus[n % len(corpus)]
        name = f"{now - count + n}.M{n}P1.bench:2,"
        (root / "cur" / name).write_bytes(data)
        total += len(data)
        if sys.stderr.isatty() and n % 1000 == 0:
            print(f"\rwriting messages: {n}/{count}", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(f"\rwriting messages: {count}/{count}", file=sys.stderr)
    return total


def timed(f):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = f()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: imap_bench.py --messages 10000")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        server = PymailProcess(Path(tmp), users=dict([USER]))
        root = Path(MaildirStoreFactory.account_root(USER[0], str(server.data_dir)))
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        total = fill(root, args.messages)
        server.start()
        port = server.ports["imap"]
        try:
            warm = imaplib.IMAP4("127.0.0.1", port)
            warm.login(*USER)
            warm.select("INBOX")
            warm.fetch("1:*", "(ENVELOPE)")
            warm.logout()

            def login_select() -> imaplib.IMAP4:
                c = imaplib.IMAP4("127.0.0.1", port)
                c.login(*USER)
                c.select("INBOX")
                return c

            t_login, c = timed(login_select)
            t_fetch, _ = timed(lambda: c.fetch("1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"))
            t_body, _ = timed(lambda: c.fetch("1:*", "(BODY.PEEK[])"))
            t_search, _ = timed(lambda: c.uid("SEARCH", "SUBJECT", "test"))
            t_store, _ = timed(lambda: c.store("1:*", "+FLAGS.SILENT", "(\\Flagged)"))
            print(f"messages: {args.messages}, {total / 1e6:.1f} MB")
            print(f"LOGIN+SELECT            {t_login * 1000:8.1f} ms   (Dovecot 39 ms)")
            print(f"FETCH 1:* (... ENVELOPE) {t_fetch:8.3f} s    (Dovecot 0.14 s)")
            print(f"FETCH 1:* BODY.PEEK[]   {total / 1e6 / t_body:8.1f} MB/s (Dovecot 520 MB/s)")
            print(f"UID SEARCH SUBJECT      {t_search * 1000:8.1f} ms   (Dovecot 35 ms)")
            print(f"STORE 1:* +FLAGS        {t_store:8.3f} s    (Dovecot 0.16 s)")
            c.logout()

            # IDLE push latency of an SMTP delivery.
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            f = s.makefile("rb")
            f.readline()
            s.sendall(f"a LOGIN {USER[0]} {USER[1]}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
            while not f.readline().startswith(b"+ "):
                pass
            with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as smtp:
                start = time.perf_counter()
                smtp.sendmail("x@example.net", [USER[0]], b"Subject: push\r\n\r\nx\r\n")
                while b"EXISTS" not in f.readline():
                    pass
                print(f"IDLE push after SMTP    {(time.perf_counter() - start) * 1000:8.1f} ms"
                      "   (goal < 1000 ms; includes the SMTP transaction)")
            s.close()

            # Memory per idle authenticated connection.
            assert server.proc is not None
            pid = server.proc.pid
            before = rss_kb(pid)
            conns = []
            for n in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.recv(4096)
                s.sendall(f"a LOGIN {USER[0]} {USER[1]}\r\n".encode())
                conns.append(s)
                if n % 100 == 99:
                    for each in conns[-100:]:
                        data = b""
                        while b"a OK" not in data and b"a NO" not in data:
                            chunk = each.recv(4096)
                            if not chunk:
                                break
                            data += chunk
            time.sleep(1)
            after = rss_kb(pid)
            per = (after - before) * 1024 / max(1, len(conns))
            print(f"RSS per idle authenticated connection over {len(conns)}: {per / 1024:.1f} KB"
                  "   (goal <= 5 KB; Dovecot 4.9 MB)")
            for s in conns:
                s.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
