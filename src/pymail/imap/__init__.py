"""
pymail's own IMAP4rev1 protocol layer (RFC 3501), on Twisted's Protocol.

Public entry point: :class:`pymail.imap.server.IMAPFactory`.  Modules:
``reader`` (lines and literals), ``parser`` (tokenizer), ``commands``
(command grammar), ``dispatch`` (command table and states), ``server``
(the protocol), ``mailboxes`` and ``selected`` (handlers), ``session``
(the selected-mailbox view), ``fetch``, ``search``, ``envelope``,
``bodystructure``, ``message`` and ``responses``.
"""
