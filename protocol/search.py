"""What a search request means, sans-I/O: its words, its limits and its opaque cursor.

The query is words, never a query language: `query_words` keeps the runs of letters and digits
(after NFC normalisation, so a composed and a decomposed accent are the same word) and drops
everything else, so no user input can reach FTS5 or tsquery syntax. The backends AND the words
and match the last one as a prefix (docs/protocol.md, "Search").
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from .errors import ErrorCode, ProtocolError

MAX_QUERY_LENGTH = 200  # characters, before normalisation
MAX_SEARCH_LIMIT = 50
DEFAULT_SEARCH_LIMIT = 20
_WORD = re.compile(r"[^\W_]+")  # letters and digits: what both backends' parsers call a word
_CURSOR_PREFIX = "m"  # a cursor is "m" + the last result's id, base64url without padding
_MAX_ID = 2**63 - 1


def query_words(query: str, ref: str | None = None) -> tuple[str, ...]:
    """The words of `query` in order, lower-cased; `query_too_long` past `MAX_QUERY_LENGTH`
    characters, `query_empty` if it holds no word."""
    if len(query) > MAX_QUERY_LENGTH:
        raise ProtocolError(
            ErrorCode.QUERY_TOO_LONG, f"query is over {MAX_QUERY_LENGTH} characters", ref
        )
    words = _WORD.findall(unicodedata.normalize("NFC", query).lower())
    if not words:
        raise ProtocolError(ErrorCode.QUERY_EMPTY, "query has no words (letters or digits)", ref)
    return tuple(words)


def encode_search_cursor(message_id: int) -> str:
    """The opaque `next` cursor after a result page ending with message `message_id`."""
    raw = f"{_CURSOR_PREFIX}{message_id:d}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_search_cursor(cursor: str, ref: str | None = None) -> int:
    """The message id a cursor of `encode_search_cursor` carries; `bad_field` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if raw[:1] != _CURSOR_PREFIX or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ProtocolError(ErrorCode.BAD_FIELD, "`before` is not a search cursor", ref)
    message_id = int(digits)
    if not 1 <= message_id <= _MAX_ID:
        raise ProtocolError(ErrorCode.BAD_FIELD, "`before` is not a search cursor", ref)
    return message_id
