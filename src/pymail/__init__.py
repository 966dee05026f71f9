"""pymail: a complete mail server (SMTP, submission, IMAP4, POP3) built on Twisted."""

__version__ = "0.1.0"
