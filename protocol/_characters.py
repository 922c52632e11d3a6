"""Which characters hibiki refuses in the strings it stores (`text`, `client_id`).

NUL cannot be stored at all by PostgreSQL's `text` type, so a database holding one could never
move to that backend. The other controls have no place in chat text and are what terminal
escape sequences are made of; U+FFFE and U+FFFF are noncharacters; lone surrogates are not
characters (JSON escapes like `\\ud800` are already refused by the decoder, as invalid JSON).
Tab, LF and CR are kept: multi-line messages need them. Everything else, including format
characters (U+200B, U+202E, ...) and private-use characters, is accepted.
"""

from __future__ import annotations

import re

# C0 controls but tab, LF and CR; DEL and the C1 controls; U+FFFE, U+FFFF; surrogates.
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
# The same for ASCII text, as a byte table (0: refused): translate() and a memchr() for the 0
# take ~0.4 ns per character where the regex takes ~2.5 (measured on 3,900 characters: 1.5 us
# against 9.9 us; msgspec decodes the whole frame in ~1.7 us).
_ASCII_OK = bytes(0 if _REFUSED.match(chr(b)) else 1 for b in range(256))


def refused_character(value: str) -> str | None:
    """None if `value` may be stored; else names its first refused character and where it is,
    e.g. "U+0000 (a control character) at index 5", for an error message."""
    if value.isascii() and 0 not in value.encode("ascii").translate(_ASCII_OK):
        return None
    found = _REFUSED.search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        kind = "a lone surrogate"
    elif code >= 0xFFFE:
        kind = "a noncharacter"
    else:
        kind = "a control character"
    return f"U+{code:04X} ({kind}) at index {found.start()}"
