"""The message writer (group commit) and what runs after each commit."""

from server.persist.writer import MessageWriter, PendingSend

__all__ = ["MessageWriter", "PendingSend"]
