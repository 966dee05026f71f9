"""
An example pymail storage backend: each account is one JSON file.

It is small on purpose, to show what a backend must do; it is not meant
for real mail (every change rewrites the account's whole file).  It passes
``pymail.testing.MailStoreContract`` (see test_jsonstore.py beside it) and
is found as the backend ``jsonstore`` when this directory is on
``sys.path`` (see twisted/plugins/jsonstore_plugin.py).

What it shows:

- the view of each folder is a :class:`pymail.storage.base.MailboxView`,
  which keeps messages by UID, MODSEQ and listeners for you, and
  :class:`pymail.storage.base.ViewBacked` answers the ``IMailbox`` methods
  that only read the view (messages, info, HIGHESTMODSEQ, keywords, cached
  values, listeners);
- the store keeps one live mailbox object per folder, so every session
  sees the same view;
- writes are durable before the Deferred fires
  (:func:`pymail.storage.fsutil.write_file_durably`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from datetime import datetime, UTC
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from pymail.errors import BadMailboxName, MailboxExists, NoSuchMailbox, NoSuchMessage
from pymail.interfaces import (
    SPECIAL_USE_FOLDERS,
    IMailbox,
    IMailStore,
    IMailStoreFactory,
    MessageInfo,
)
from pymail.storage.base import (
    MailboxView,
    ViewBacked,
    apply_flag_mode,
    canonical_name,
    check_mailbox_name,
    normalise_flags,
    rename_plan,
)
from pymail.storage.fsutil import write_file_durably

@implementer(IMailbox)
class JsonMailbox(ViewBacked):
    def __init__(self, store: JsonStore, name: str, state: dict[str, Any]) -> None:
        self.name = name
        self._store = store
        self._state = state  # the folder's part of the JSON document
        self._cache: dict[tuple[int, str], Any] = {}
        self._view = MailboxView(self)
        self._view.load(self._info(m) for m in state["messages"])

    @staticmethod
    def _info(m: dict[str, Any]) -> MessageInfo:
        return MessageInfo(m["uid"], str(m["uid"]), frozenset(m["flags"]),
                           datetime.fromtimestamp(m["date"], UTC), m["size"])

    def _message(self, uid: int) -> dict[str, Any]:
        for m in self._state["messages"]:
            if m["uid"] == uid:
                return m
        raise NoSuchMessage(f"no message with UID {uid}")

    def uidvalidity(self) -> int:
        return int(self._state["uidvalidity"])

    def uidnext(self) -> int:
        return int(self._state["next_uid"])

    def read(self, uid: int) -> bytes:
        return base64.b64decode(self._message(uid)["data"])

    def append(self, message: bytes, flags: Iterable[str] = (),
               internaldate: datetime | None = None) -> Deferred[int]:
        try:
            flagset = normalise_flags(flags)
        except ValueError as e:
            return fail(e)
        uid = self._state["next_uid"]
        self._state["next_uid"] += 1
        when = (internaldate or datetime.now(UTC)).timestamp()
        entry = {"uid": uid, "flags": sorted(flagset), "date": when, "size": len(message),
                 "data": base64.b64encode(message).decode("ascii")}
        self._state["messages"].append(entry)
        self._store.save()
        self._view.apply_added([self._info(entry)])
        return succeed(uid)

    def set_flags(self, uids: Iterable[int], flags: Iterable[str],
                  mode: str) -> Deferred[dict[int, frozenset[str]]]:
        try:
            flagset = normalise_flags(flags)
            new = {u: apply_flag_mode(self._view.info(u).flags, flagset, mode)
                   for u in uids if u in self._view}
        except ValueError as e:
            return fail(e)
        for uid, value in new.items():
            self._message(uid)["flags"] = sorted(value)
        self._store.save()
        return succeed(self._view.apply_flags(new))

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        allowed = None if uids is None else set(uids)
        doomed = {i.uid for i in self._view.messages()
                  if "\\Deleted" in i.flags and (allowed is None or i.uid in allowed)}
        return succeed(self._drop(doomed))

    def _drop(self, doomed: set[int]) -> list[int]:
        self._state["messages"] = [m for m in self._state["messages"] if m["uid"] not in doomed]
        self._store.save()
        return self._view.apply_expunged(doomed)

    def refresh(self) -> Deferred[None]:
        return succeed(None)  # nobody else writes the file


def _new_folder() -> dict[str, Any]:
    return {"uidvalidity": time.time_ns() // 1000 % 2**31 or 1, "next_uid": 1, "messages": []}


@implementer(IMailStore)
class JsonStore:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                self._doc = json.load(f)
        except FileNotFoundError:
            self._doc = {"folders": {"INBOX": _new_folder()}, "subscriptions": ["INBOX"],
                         "roles": {}}
            for name, role in SPECIAL_USE_FOLDERS:
                self._doc["folders"][name] = _new_folder()
                self._doc["roles"][name] = role
                self._doc["subscriptions"].append(name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.save()
        self._live: dict[str, JsonMailbox] = {}

    def save(self) -> None:
        write_file_durably(self.path, json.dumps(self._doc).encode())

    def list_mailboxes(self) -> list[str]:
        return sorted(self._doc["folders"], key=lambda n: (n != "INBOX", n))

    def get_mailbox(self, name: str) -> Deferred[IMailbox]:
        try:
            name = check_mailbox_name(canonical_name(name))
        except BadMailboxName as e:
            return fail(e)
        if name not in self._doc["folders"]:
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        if name not in self._live:
            self._live[name] = JsonMailbox(self, name, self._doc["folders"][name])
        return succeed(self._live[name])

    def create_mailbox(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
        except BadMailboxName as e:
            return fail(e)
        if name in self._doc["folders"]:
            return fail(MailboxExists(f"mailbox {name!r} exists already"))
        self._doc["folders"][name] = _new_folder()
        self.save()
        return succeed(None)

    def delete_mailbox(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
            if name == "INBOX":
                raise BadMailboxName("INBOX cannot be deleted")
        except BadMailboxName as e:
            return fail(e)
        if self._doc["folders"].pop(name, None) is None:
            return fail(NoSuchMailbox(f"no mailbox named {name!r}"))
        self._doc["roles"].pop(name, None)
        self.save()
        live = self._live.pop(name, None)
        if live is not None:
            live._view.apply_expunged([i.uid for i in live.messages()])
        return succeed(None)

    def rename_mailbox(self, old: str, new: str) -> Deferred[None]:
        folders = self._doc["folders"]
        try:
            plan = rename_plan(folders, old, new)
        except BadMailboxName as e:
            return fail(e)
        if plan[0][0] not in folders:
            return fail(NoSuchMailbox(f"no mailbox named {old!r}"))
        if any(target in folders for _, target in plan):
            return fail(MailboxExists(f"mailbox {plan[0][1]!r} exists already"))
        if plan[0][0] == "INBOX":
            inbox = folders["INBOX"]
            folders[plan[0][1]] = {**_new_folder(), "next_uid": inbox["next_uid"],
                                   "messages": list(inbox["messages"])}
            live = self._live.get("INBOX")
            if live is not None:
                live._drop({m["uid"] for m in inbox["messages"]})
            else:
                inbox["messages"] = []
                self.save()
            return succeed(None)
        for source, target in plan:
            folders[target] = folders.pop(source)
            if source in self._doc["roles"]:
                self._doc["roles"][target] = self._doc["roles"].pop(source)
            if source in self._live:
                self._live[target] = self._live.pop(source)
                self._live[target].name = target
        self.save()
        return succeed(None)

    def subscriptions(self) -> list[str]:
        return sorted(self._doc["subscriptions"])

    def subscribe(self, name: str) -> Deferred[None]:
        try:
            name = check_mailbox_name(canonical_name(name))
        except BadMailboxName as e:
            return fail(e)
        if name not in self._doc["subscriptions"]:
            self._doc["subscriptions"].append(name)
            self.save()
        return succeed(None)

    def unsubscribe(self, name: str) -> Deferred[None]:
        name = canonical_name(name)
        if name in self._doc["subscriptions"]:
            self._doc["subscriptions"].remove(name)
            self.save()
        return succeed(None)

    def special_use(self) -> dict[str, str]:
        return dict(self._doc["roles"])


@implementer(IMailStoreFactory)
class JsonStoreFactory:
    name = "jsonstore"
    description = "Example backend: one JSON file per account (not for real mail)."

    def __init__(self) -> None:
        self._stores: dict[str, JsonStore] = {}

    def open_store(self, address: str, data_dir: str) -> IMailStore:
        local, _, domain = address.rpartition("@")
        if not local or "/" in address or local.startswith(".") or domain.startswith("."):
            raise ValueError(f"cannot store mail for {address!r}")
        path = os.path.join(data_dir, "jsonstore", domain, local + ".json")
        if path not in self._stores:
            self._stores[path] = JsonStore(path)
        return self._stores[path]
