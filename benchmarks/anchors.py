"""
Recipes that start each server under test on loopback ports, with its own
configuration and data under a temporary directory, and stop it by its PID.

- ``PymailServer``: the real ``twistd -n pymail`` (tests/e2e/harness.py).
- ``PostfixServer``: a private Postfix instance (Debian package ``postfix``):
  its own config_directory, queue_directory and data_directory,
  inet_interfaces=127.0.0.1 on a high port, virtual(8) delivery to Maildir
  for one domain, and no way out: no smtp/lmtp client in master.cf,
  default_transport and relay_transport are error(8), relaying is refused.
- ``DovecotServer``: a private Dovecot 2.3 instance (``dovecot-imapd``,
  ``dovecot-pop3d``): passwd-file users, Maildir, IMAP and POP3 on high
  ports, no SSL, its own base_dir and log.
- ``AiosmtpdServer``: aiosmtpd_maildir.py, with and without fsync.
- ``SmtpSinkServer``: Postfix's smtp-sink, which stores nothing: the ceiling
  of what the client and loopback can do.

``ensure_installed()`` installs the Debian and PyPI packages if missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from harness import PymailProcess, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
DOMAIN = "example.org"
BENCH_USER = f"bench@{DOMAIN}"   # the prefilled folder (IMAP, POP3)
SINK_USER = f"sink@{DOMAIN}"     # where SMTP load is delivered
APPEND_USER = f"append@{DOMAIN}"  # where IMAP APPEND load goes
PUSH_USER = f"push@{DOMAIN}"  # where IDLE sessions wait for new mail
PASSWORD = "bench-pw"
USERS = (BENCH_USER, SINK_USER, APPEND_USER, PUSH_USER)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
APT_PACKAGES = {"postconf": "postfix", "smtp-sink": "postfix", "dovecot": "dovecot-imapd",
                "/usr/lib/dovecot/pop3": "dovecot-pop3d", "strace": "strace"}


def ensure_installed(log: object = print) -> None:
    """apt-get install the anchors (and pip install aiosmtpd) when missing."""
    missing = sorted({pkg for exe, pkg in APT_PACKAGES.items()
                      if not (os.path.exists(exe) if exe.startswith("/") else shutil.which(exe))})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")  # type: ignore[operator]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", *missing]
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            subprocess.run(install, check=True, env=env, stdout=subprocess.DEVNULL)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        log("installing aiosmtpd with pip")  # type: ignore[operator]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "aiosmtpd"], check=True)


def open_path(path: Path) -> None:
    """Let unprivileged server processes traverse to ``path`` (adds o+x)."""
    for p in (path, *path.parents):
        if p == Path("/"):
            break
        mode = p.stat().st_mode
        if not mode & 0o001:
            os.chmod(p, mode | 0o001)


def wait_listening(ports: list[int], timeout: float, alive: object = None) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending:
        if callable(alive) and not alive():
            raise RuntimeError("server exited while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {sorted(pending)} not listening after {timeout}s")
        for port in list(pending):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                pending.discard(port)
            except OSError:
                pass
        time.sleep(0.05)


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process ``pid``, then SIGKILL if it outlives ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Server:
    """What the suite needs of every server under test."""

    name = "server"
    pid: int
    ports: dict[str, int]

    def maildir(self, address: str) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop_pid(self.pid)

    def _spawn(self, args: list[str]) -> None:
        """Start a foreground server process and wait for its SMTP port."""
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_listening([self.ports["smtp"]], START_TIMEOUT_S, lambda: self.proc.poll() is None)


# Every load comes from 127.0.0.1: lift the per-address connection limit.
PYMAIL_EXTRA_CONFIG = """
[security]
max_connections = 20000
max_connections_per_ip = 20000
"""


class PymailServer(Server):
    name = "pymail"

    def __init__(self, root: Path, backend: str = "maildir") -> None:
        self.root = root
        self.backend = backend
        root.mkdir(parents=True, exist_ok=True)
        extra = PYMAIL_EXTRA_CONFIG + f'[storage]\nbackend = "{backend}"\n'
        self.proc = PymailProcess(root, extra_config=extra,
                                  users={u: PASSWORD for u in USERS})
        self.ports = dict(self.proc.ports)

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.proc.data_dir / "mail" / domain / local

    def start(self) -> None:
        self.proc.start(START_TIMEOUT_S)
        assert self.proc.proc is not None
        self.pid = self.proc.proc.pid

    def stop(self) -> None:
        self.proc.stop()


POSTFIX_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{port}  inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixServer(Server):
    name = "postfix"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc"
        self.spool = root / "spool"
        self.vmail = root / "vmail"
        self.ports = {"smtp": free_port()}
        for d in (self.etc, self.spool, self.vmail, root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        open_path(root)
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        os.chown(self.vmail, self.uid, self.gid)
        postfix = pwd.getpwnam("postfix")
        os.chown(root / "data", postfix.pw_uid, postfix.pw_gid)
        (self.etc / "vmailbox").write_text(
            "".join(f"{u} {u.split('@')[1]}/{u.split('@')[0]}/\n" for u in USERS))
        (self.etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {root / "data"}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example
mydomain = bench.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {root / "maillog"}
maillog_file_prefixes = {root}
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
relay_domains =
default_transport = error:5.7.1 benchmark instance never relays
relay_transport = error:5.7.1 benchmark instance never relays
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = reject_unauth_destination
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.vmail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
virtual_minimum_uid = 1
virtual_destination_concurrency_limit = 20
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
message_size_limit = 52428800
virtual_mailbox_limit = 0
biff = no
""")
        (self.etc / "master.cf").write_text(
            POSTFIX_MASTER_CF.format(port=f"127.0.0.1:{self.ports['smtp']}"))

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.vmail / domain / local

    def start(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True,
                       capture_output=True, timeout=START_TIMEOUT_S)
        pidfile = self.spool / "pid" / "master.pid"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid = int(pidfile.read_text().split()[0])
        wait_listening([self.ports["smtp"]], START_TIMEOUT_S)

    def stop(self) -> None:
        stop_pid(self.pid)


def argon2id_hash(password: str) -> str:
    """A hash with pymail's argon2id parameters, in the notation both servers read."""
    import argon2
    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
    return "{ARGON2ID}" + hasher.hash(password)


class DovecotServer(Server):
    """
    Dovecot with the same argon2id password hashes as pymail (so LOGIN costs
    both servers the same hashing), or with ``scheme="plain"`` none at all.
    """

    name = "dovecot"

    def __init__(self, root: Path, scheme: str = "argon2id") -> None:
        self.root = root
        self.mail = root / "mail"
        self.ports = {"imap": free_port(), "pop3": free_port()}
        for d in (root / "run", root / "state", self.mail):
            d.mkdir(parents=True, exist_ok=True)
        open_path(root)
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        os.chown(self.mail, self.uid, self.gid)
        secret = argon2id_hash(PASSWORD) if scheme == "argon2id" else "{PLAIN}" + PASSWORD
        (root / "passwd").write_text("".join(f"{u}:{secret}::::::\n" for u in USERS))
        self.config = root / "dovecot.conf"
        self.config.write_text(f"""\
instance_name = bench-dovecot-{self.ports['imap']}
base_dir = {root / "run"}
state_dir = {root / "state"}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root / "dovecot.log"}
mail_location = maildir:{self.mail}/%d/%n
mail_uid = {self.uid}
mail_gid = {self.gid}
first_valid_uid = 1
default_process_limit = 2000
default_client_limit = 20000
default_vsz_limit = 1G
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = {root / "passwd"}
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail}/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports['imap']}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 2000
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.ports['pop3']}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap {{
  process_limit = 12000
}}
protocol imap {{
  mail_max_userip_connections = 20000
}}
protocol pop3 {{
  mail_max_userip_connections = 100
}}
service anvil {{
  client_limit = 25000
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.mail / domain / local

    def start(self) -> None:
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_listening(list(self.ports.values()), START_TIMEOUT_S,
                       lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        stop_pid(self.pid)


class AiosmtpdServer(Server):
    def __init__(self, root: Path, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self.name = "aiosmtpd" if fsync else "aiosmtpd-nofsync"
        self.ports = {"smtp": free_port()}
        root.mkdir(parents=True, exist_ok=True)

    def maildir(self, address: str) -> Path:
        return self.root / "Maildir"

    def start(self) -> None:
        args = [sys.executable, str(HERE / "aiosmtpd_maildir.py"), "--port",
                str(self.ports["smtp"]), "--maildir", str(self.root / "Maildir")]
        if not self.fsync:
            args.append("--no-fsync")
        self._spawn(args)


class SmtpSinkServer(Server):
    name = "smtp-sink"

    def __init__(self, root: Path) -> None:
        self.ports = {"smtp": free_port()}

    def start(self) -> None:
        self._spawn(["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.ports['smtp']}", "1000"])


def prefill(server: Server, template: Path, address: str = BENCH_USER) -> None:
    """
    Put the generated Maildir ``template`` into ``address``'s INBOX, as
    hard links (instant, no disk traffic): Maildir servers never rewrite a
    message file in place (flags change the name, by rename), so the
    template's bytes stay as generated.
    """
    target = server.maildir(address)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, target, copy_function=os.link,
                    ignore=shutil.ignore_patterns(".complete"))
    owner = getattr(server, "uid", None)
    if owner is not None:
        for d in (target.parent.parent, target.parent):
            os.chown(d, server.uid, server.gid)  # type: ignore[attr-defined]
        for dirpath, dirnames, filenames in os.walk(target):
            os.chown(dirpath, server.uid, server.gid)  # type: ignore[attr-defined]
            for f in filenames:
                os.chown(os.path.join(dirpath, f), server.uid, server.gid)  # type: ignore[attr-defined]
