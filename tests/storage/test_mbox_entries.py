"""The packed table of an mbox folder's messages (pymail.storage.mbox_entries)."""

from __future__ import annotations

from array import array
from datetime import datetime, UTC

from twisted.trial.unittest import SynchronousTestCase

from pymail.storage.mbox_entries import (
    CLEAN_BIT,
    Entries,
    Entry,
    last_entry,
    peek_entry,
    rows_of,
)

SEEN = frozenset({"\\Seen"})
NONE: frozenset[str] = frozenset()


def packed_table() -> Entries:
    """Three packed messages (UIDs 2, 5, 9); UID 5 starts last in the file."""
    ints = array("q", [
        2, 0, 40, 300, 1_700_000_000, 320, 1 | CLEAN_BIT, 11,
        5, 700, 740, 900, 1_700_000_100, 210, 1, 14,
        9, 301, 341, 699, 1_700_000_200, 400, 0, 12,
    ])
    return Entries(ints, [SEEN, NONE, SEEN])


class EntriesTests(SynchronousTestCase):
    def test_packed_rows_read_as_entries(self) -> None:
        """A packed message reads as the Entry its row describes, the same object each time."""
        table = packed_table()
        entry = table[5]
        assert entry == Entry(5, 700, 740, 900, NONE,
                              datetime.fromtimestamp(1_700_000_100, UTC), 210, True, False, 14)
        assert table[5] is entry
        assert table[2].clean and table[2].quoted and not table[9].quoted
        assert 3 not in table and table.get(3) is None
        assert len(table) == 3 and sorted(table) == [2, 5, 9]

    def test_values_give_each_message_once(self) -> None:
        """Iterating values() (which unpacks each message) gives every message exactly once."""
        table = packed_table()
        table[5]
        assert sorted(e.uid for e in table.values()) == [2, 5, 9]
        assert sorted(e.uid for e in table.values()) == [2, 5, 9]
        assert sorted(u for u, _ in packed_table().items()) == [2, 5, 9]

    def test_changes_replace_and_delete(self) -> None:
        """In-place changes stick; set, delete and pop keep the count and the keys right."""
        table = packed_table()
        table[5].flags = SEEN
        assert table[5].flags == SEEN
        table[12] = Entry(12, 950, 990, 1200, NONE, datetime.now(UTC), 260)
        table[9] = Entry(9, 301, 341, 699, NONE, datetime.now(UTC), 400)
        del table[2]
        assert table.pop(5).uid == 5
        assert sorted(table) == [9, 12] and len(table) == 2
        assert table[9].flags == NONE
        self.assertRaises(KeyError, table.__delitem__, 2)
        table.clear()
        assert len(table) == 0 and list(table) == []

    def test_last_is_by_position_in_the_file(self) -> None:
        """last() is the message that starts last, packed or not, deleted ones left out."""
        table = packed_table()
        assert last_entry(table) is table[5]
        del table[5]
        assert last_entry(table) is table[9]
        table[20] = Entry(20, 2000, 2040, 2100, NONE, datetime.now(UTC), 70)
        assert last_entry(table) is table[20]
        assert last_entry(Entries()) is None

    def test_rows_match_the_entries(self) -> None:
        """rows() gives what each Entry's row() gives, without unpacking."""
        table = packed_table()
        table[5].flags = frozenset({"\\Flagged", "\\Seen"})
        expected = sorted(table[u].row() for u in (2, 5, 9))
        fresh = packed_table()
        fresh[5].flags = frozenset({"\\Flagged", "\\Seen"})
        assert sorted(rows_of(fresh)) == expected
        assert sorted(rows_of(dict(table))) == expected

    def test_all_unpacked_frees_the_packed_rows(self) -> None:
        """Once every packed message became an object, the table holds just the objects."""
        table = packed_table()
        entries = [table[u] for u in (2, 5, 9)]
        assert table._uids == array("q") and table._dropped == set()
        assert [table[u] for u in (2, 5, 9)] == entries and len(table) == 3
        del table[5]
        assert sorted(table) == [2, 9]

    def test_peek_leaves_the_row_packed(self) -> None:
        """A read-only peek gives the entry without making it the table's object."""
        table = packed_table()
        peeked = peek_entry(table, 9)
        assert peeked == table.peek(9) and peeked is not None and peeked.start == 301
        assert table._dropped == set() and 9 not in table._live
        live = table[9]
        assert peek_entry(table, 9) is live and peek_entry(table, 3) is None
        assert peek_entry({9: live}, 9) is live
