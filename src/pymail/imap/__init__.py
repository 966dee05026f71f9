"""
pymail's own IMAP4rev1 protocol layer (RFC 3501), on Twisted's Protocol.

Public entry point: :class:`pymail.imap.server.IMAPFactory`.  Modules:
``reader`` (lines and literals), ``parser`` (tokenizer), ``commands``
(command grammar), ``dispatch`` (command table and states), ``server``
(the protocol), ``mailboxes`` and ``selected`` (handlers), ``session``
(the selected-mailbox view), ``fetch``, ``search``, ``envelope``,
``bodystructure``, ``message``, ``responses``, ``cache`` (rendered
ENVELOPE/BODYSTRUCTURE and SEARCH fields in memory, shared by all sessions)
and ``derive`` (those values, and filling them a batch at a time in the
thread pool on a folder's first access).

CONDSTORE and QRESYNC are offered when the store factory has
``persistent_modseq = True``; FETCH reads message bodies in the thread pool
when the mailbox has ``threadsafe_read = True`` (both Maildir).
"""
