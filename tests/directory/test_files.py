"""The accounts database: files, validation, resolution, live reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from pymail.directory.files import FileDirectory
from pymail.directory.passwords import hash_password, verify_password
from pymail.errors import BadAddress, DirectoryError


@pytest.fixture
def directory(tmp_path: Path) -> FileDirectory:
    d = FileDirectory(str(tmp_path))
    d.add_domain("example.org")
    return d


def test_password_hash_is_argon2id_and_verifies() -> None:
    """Hashes are {ARGON2ID} PHC strings; the right password verifies, others do not."""
    h = hash_password("correct horse")
    assert h.startswith("{ARGON2ID}$argon2id$")
    assert "correct horse" not in h
    assert verify_password(h, "correct horse")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "correct horse")
    assert not verify_password("{PLAIN}correct horse", "correct horse")


def test_add_user_and_resolve(directory: FileDirectory) -> None:
    """An account resolves to itself, case-insensitively, and with a +tag."""
    directory.add_user("Alice@Example.ORG", "{ARGON2ID}x")
    assert directory.has_user("alice@example.org")
    assert directory.resolve("ALICE@example.org") == ["alice@example.org"]
    assert directory.resolve("alice+lists@example.org") == ["alice@example.org"]
    assert directory.resolve("bob@example.org") is None
    assert directory.resolve("alice@elsewhere.net") is None


def test_aliases_expand_and_loops_stop(directory: FileDirectory) -> None:
    """Aliases expand to accounts, nested aliases too, and a loop ends."""
    directory.add_user("alice@example.org", "h")
    directory.add_user("bob@example.org", "h")
    directory.add_alias("team@example.org", ["alice@example.org", "staff@example.org"])
    directory.add_alias("staff@example.org", ["bob@example.org", "team@example.org"])
    assert directory.resolve("team@example.org") == ["alice@example.org", "bob@example.org"]


def test_postmaster_and_abuse_always_exist(directory: FileDirectory) -> None:
    """postmaster@ and abuse@ reach an account of the domain without an alias."""
    directory.add_user("zed@example.org", "h")
    directory.add_user("amy@example.org", "h")
    assert directory.resolve("postmaster@example.org") == ["amy@example.org"]
    assert directory.resolve("Abuse@example.org") == ["amy@example.org"]


def test_disabled_account_is_locked_out(directory: FileDirectory) -> None:
    """A disabled account receives no mail and has_user is False."""
    directory.add_user("alice@example.org", "h")
    directory.set_disabled("alice@example.org", True)
    assert not directory.has_user("alice@example.org")
    assert directory.resolve("alice@example.org") is None
    assert "nologin" in (Path(directory.data_dir) / "passwd").read_text()


def test_changes_are_seen_by_another_reader(directory: FileDirectory) -> None:
    """A second FileDirectory (the server) sees changes made by the first (the CLI)."""
    server = FileDirectory(directory.data_dir)
    assert not server.has_user("alice@example.org")
    directory.add_user("alice@example.org", "h")
    assert server.has_user("alice@example.org")
    directory.delete_user("alice@example.org")
    assert not server.has_user("alice@example.org")


@pytest.mark.parametrize(
    "bad",
    ["alice", "@example.org", "al ice@example.org", "a+b@example.org", "../x@example.org",
     "a/b@example.org", "a\nb@example.org", "a@exa mple.org", "a@-bad.org", "a" * 65 + "@x.org",
     "a\x00@example.org"],
)
def test_hostile_addresses_refused(directory: FileDirectory, bad: str) -> None:
    """Addresses that could become paths or headers are refused with BadAddress."""
    with pytest.raises(BadAddress):
        directory.add_user(bad, "h")


def test_user_needs_local_domain(directory: FileDirectory) -> None:
    """Adding a user in an unknown domain says how to add the domain."""
    with pytest.raises(DirectoryError, match="pymail domain add elsewhere.net"):
        directory.add_user("a@elsewhere.net", "h")


def test_duplicates_refused(directory: FileDirectory) -> None:
    """An existing account, domain or alias name cannot be added twice or shadowed."""
    directory.add_user("alice@example.org", "h")
    with pytest.raises(DirectoryError, match="exists already"):
        directory.add_user("alice@example.org", "h")
    with pytest.raises(DirectoryError, match="exists already"):
        directory.add_domain("EXAMPLE.org")
    with pytest.raises(DirectoryError, match="is an account"):
        directory.add_alias("alice@example.org", ["x@y.org"])


def test_domain_with_accounts_cannot_be_deleted(directory: FileDirectory) -> None:
    """Deleting a domain that still has accounts is refused, naming them."""
    directory.add_user("alice@example.org", "h")
    with pytest.raises(DirectoryError, match="alice@example.org"):
        directory.delete_domain("example.org")


def test_files_survive_comments_and_junk(tmp_path: Path) -> None:
    """Comments, blank lines and junk lines in the files are ignored, not fatal."""
    (tmp_path / "domains").write_text("# c\n\nexample.org\n")
    (tmp_path / "passwd").write_text("# c\njunkline\nalice@example.org:h::::::\n")
    (tmp_path / "aliases").write_text("nonsense\nx@example.org: alice@example.org\n")
    d = FileDirectory(str(tmp_path))
    assert d.resolve("x@example.org") == ["alice@example.org"]


def test_catch_all_alias(directory: FileDirectory) -> None:
    """'@domain' can be added and deleted as the domain's catch-all alias."""
    directory.add_user("alice@example.org", "h")
    assert directory.add_alias("@Example.ORG", ["alice@example.org"]) == "@example.org"
    assert directory.aliases()["@example.org"] == ["alice@example.org"]
    assert "@example.org: alice@example.org" in (Path(directory.data_dir) / "aliases").read_text()
    directory.delete_alias("@example.org")
    assert "@example.org" not in directory.aliases()
    with pytest.raises(BadAddress):
        directory.add_alias("@not a domain", ["alice@example.org"])


def test_alias_table_is_a_read_only_view_of_the_current_aliases(directory: FileDirectory) -> None:
    """alias_table() holds every alias and catch-all, follows changes and refuses writes."""
    directory.add_alias("team@example.org", ["alice@example.org", "far@example.net"])
    directory.add_alias("@example.org", ["alice@example.org"])
    table = directory.alias_table()
    assert dict(table) == {"team@example.org": ["alice@example.org", "far@example.net"],
                           "@example.org": ["alice@example.org"]}
    with pytest.raises(TypeError):
        table["x@example.org"] = ["alice@example.org"]  # type: ignore[index]
    directory.delete_alias("team@example.org")
    assert "team@example.org" not in directory.alias_table()


class _RunningClock(Clock):
    """A Clock that says it is running, as the real reactor does once started."""

    running = True


def test_outside_edit_is_seen_by_the_first_lookup_of_the_next_turn(tmp_path: Path) -> None:
    """With a running reactor the files are checked once a turn; an outside edit shows next turn."""
    clock = _RunningClock()
    server = FileDirectory(str(tmp_path), clock)
    (tmp_path / "domains").write_text("example.org\n")
    assert not server.has_user("alice@example.org")
    (tmp_path / "passwd").write_text("alice@example.org:h::::::\n")
    # Same turn: the snapshot checked by the first lookup is used.
    assert not server.has_user("alice@example.org")
    clock.advance(0)
    assert server.has_user("alice@example.org")
    (tmp_path / "passwd").write_text("alice@example.org:h::::::nologin\n")
    clock.advance(0)
    assert not server.has_user("alice@example.org")


def test_own_write_is_seen_in_the_same_turn(tmp_path: Path) -> None:
    """A change made through the same FileDirectory is seen at once, without waiting a turn."""
    server = FileDirectory(str(tmp_path), _RunningClock())
    server.add_domain("example.org")
    assert not server.has_user("alice@example.org")
    server.add_user("alice@example.org", "h")
    assert server.has_user("alice@example.org")
