"""Protocol v1 without a socket: round trips, malformed frames, invariants, public surface."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    DEFAULT_MAX_TEXT,
    EVENT_TYPES,
    MAX_HISTORY_LIMIT,
    REQUEST_TYPES,
    Ack,
    Ban,
    CloseCode,
    Delete,
    Deleted,
    Edit,
    Edited,
    Error,
    ErrorCode,
    Hello,
    HistoryPage,
    HistoryRequest,
    Invite,
    Join,
    Joined,
    Kick,
    Leave,
    Left,
    MemberUpdated,
    Message,
    Ping,
    Pong,
    Presence,
    ProtocolError,
    ReadRequest,
    Removed,
    Resync,
    RoomCreated,
    RoomUnread,
    RoomUpdate,
    RoomUpdated,
    SearchRequest,
    SearchResults,
    Send,
    SetRole,
    Transfer,
    Typing,
    TypingRequest,
    Unban,
    Unread,
    Welcome,
    decode,
    decode_event,
    encode,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_SEQ = 2**63 - 1


def _tag(cls: type[Any]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _code_of(data: bytes | str, **kwargs: Any) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        decode(data, **kwargs)
    return info.value.code


_FAST = settings(max_examples=100, deadline=None)
# C0 controls but tab, LF and CR; DEL and the C1 controls; U+FFFE, U+FFFF; the surrogates.
_REFUSED = [
    chr(c)
    for c in (*range(0x20), *range(0x7F, 0xA0), 0xFFFE, 0xFFFF, *range(0xD800, 0xE000))
    if chr(c) not in "\t\n\r"
]
_REFUSED.sort()
# What a JSON frame can carry: a surrogate's escape is not valid JSON (bad_json, see MALFORMED).
_REFUSED_CHARACTERS = [c for c in _REFUSED if not 0xD800 <= ord(c) <= 0xDFFF]
_storable = st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff")
_storable_text = st.text(_storable | st.sampled_from("\t\n\r"), min_size=1, max_size=300)


# --- Round trips -------------------------------------------------------------------------------

_MSG = Message(room="general", id=7, seq=3, user="ann", text="hi", ts=1_700_000_000_000)

REQUEST_EXAMPLES: list[Any] = [
    Hello(token="tok"),
    Hello(token="t" * 256, resume={"general": 0, "dev.ops": 41}, ref="h1"),
    Hello(token="tok", resume={}),
    Join(room="general"),
    Join(room="a", ref="j1"),
    Leave(room="general"),
    Leave(room="0-x_y.z", ref=""),
    Send(room="general", text="hello"),
    Send(room="general", text="日本語 ✓", client_id="c" * 64, ref="r" * 64),
    Edit(room="general", id=7, text="hello, fixed"),
    Edit(room="general", id=MAX_SEQ, text="x", client_id="e1", ref="e"),
    Delete(room="general", id=7),
    Delete(room="general", id=1, client_id="d1", ref="d"),
    HistoryRequest(room="general"),
    HistoryRequest(room="general", before_seq=1, limit=1, ref="p2"),
    HistoryRequest(room="general", before_seq=MAX_SEQ, limit=MAX_HISTORY_LIMIT),
    TypingRequest(room="general"),
    TypingRequest(room="general", ref="t1"),
    Ping(),
    Ping(ref="p"),
    ReadRequest(room="general", seq=0),
    ReadRequest(room="general", seq=42, ref="r1"),
    SearchRequest(query="deploy failed"),
    SearchRequest(query="x", room="dev", before="bTE3", limit=50, ref="s1"),
    RoomUpdate(room="general"),
    RoomUpdate(room="general", topic="", slow_mode=3600, ref="u1"),
    Invite(room="team", user="bob"),
    Kick(room="team", user="bob", ref="k1"),
    Ban(room="team", user="bob"),
    Unban(room="team", user="bob"),
    Transfer(room="team", user="bob"),
    SetRole(room="team", user="bob", role="admin", ref="s1"),
]

EVENT_EXAMPLES: list[Any] = [
    Welcome(user="ann", protocol=1, server_id="hibiki-abc123"),
    Welcome(
        user="ann", protocol=1, server_id="s", rooms=["general", "dev"], heartbeat=20.0, ref="h1"
    ),
    Joined(room="general", last_seq=0),
    Joined(room="general", last_seq=41, online=["ann", "bob"], ref="j1"),
    Left(room="general"),
    Left(room="general", ref="l1"),
    _MSG,
    Message(room="general", id=8, seq=4, user="bob", text="yo", ts=1, client_id="c1"),
    Message(room="general", id=7, seq=3, user="ann", text="hi!", ts=1, edited_at=2),
    Message(room="general", id=7, seq=3, user="ann", text="", ts=1, deleted=True),
    Edited(room="general", seq=9, id=7, text="hi!", edited_at=2),
    Edited(room="general", seq=9, id=7, text="hi!", edited_at=2, client_id="e1"),
    Deleted(room="general", seq=10, id=7),
    Deleted(room="general", seq=10, id=7, client_id="d1"),
    Ack(room="general", id=7, seq=3),
    Ack(room="general", id=7, seq=3, client_id="c1", duplicate=True, ref="r1"),
    HistoryPage(room="general", messages=[], has_more=False),
    HistoryPage(room="general", messages=[_MSG], has_more=True, ref="p1"),
    Presence(room="general", user="bob", status="online"),
    Presence(room="general", user="bob", status="offline"),
    Typing(room="general", user="bob"),
    Resync(room="general", last_seq=5000, reason="gap_too_large"),
    RoomCreated(room="random"),
    Error(code="not_member", message="you are not a member of `general`"),
    Error(code="rate_limited", message="slow down", ref="r1"),
    Pong(),
    Pong(ref="p"),
    Welcome(
        user="ann",
        protocol=1,
        server_id="s",
        rooms=["general"],
        unread={"general": RoomUnread(read_seq=3, last_seq=9, count=5)},
    ),
    Unread(room="general", read_seq=9, last_seq=9, count=0),
    Unread(room="general", read_seq=4, last_seq=9, count=3, ref="r1"),
    SearchResults(query="x", results=[], next=None),
    SearchResults(
        query="deploy",
        results=[Message(room="dev", id=17, seq=4, user="ann", text="deployed", ts=1)],
        next="bTE3",
        ref="s1",
    ),
    Error(code="slow_mode", message="slow mode", ref="s1", retry_after=2.5),
    RoomUpdated(room="team", visibility="private", topic="", slow_mode=0),
    RoomUpdated(
        room="team", visibility="public", topic="t", slow_mode=5, owner="ann", by="ann", ref="u1"
    ),
    MemberUpdated(room="team", user="bob", change="kicked", by="ann"),
    MemberUpdated(room="team", user="bob", change="invited", by="ann", role="member", ref="i1"),
    Removed(room="team", reason="banned", by="ann"),
]


def _example_id(value: Any) -> str:
    """`ack+client_id,duplicate,ref`: the tag and the optional fields not at their default."""
    optional = [
        f.name
        for f in msgspec.structs.fields(value)
        if not f.required
        and getattr(value, f.name)
        != (f.default if f.default is not msgspec.NODEFAULT else f.default_factory())
    ]
    return f"{_tag(type(value))}+{','.join(optional)}" if optional else _tag(type(value))


def test_examples_cover_every_frame_type() -> None:
    assert {type(r) for r in REQUEST_EXAMPLES} == set(REQUEST_TYPES)
    assert {type(e) for e in EVENT_EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("request_", REQUEST_EXAMPLES, ids=_example_id)
def test_request_round_trips(request_: Any) -> None:
    wire = msgspec.json.encode(request_)
    assert decode(wire) == request_
    assert decode(wire.decode()) == request_  # text frames arrive as str


@pytest.mark.parametrize("event", EVENT_EXAMPLES, ids=_example_id)
def test_event_round_trips(event: Any) -> None:
    assert decode_event(encode(event)) == event


def test_events_omit_fields_at_their_default() -> None:
    assert json.loads(encode(Ack(room="general", id=7, seq=3))) == {
        "type": "ack",
        "room": "general",
        "id": 7,
        "seq": 3,
    }
    assert json.loads(encode(Welcome(user="ann", protocol=1, server_id="s"))) == {
        "type": "welcome",
        "user": "ann",
        "protocol": 1,
        "server_id": "s",
    }


def test_every_request_type_has_a_distinct_tag() -> None:
    tags = [_tag(cls) for cls in REQUEST_TYPES]
    assert sorted(tags) == [
        "ban",
        "delete",
        "edit",
        "hello",
        "history",
        "invite",
        "join",
        "kick",
        "leave",
        "ping",
        "read",
        "room_update",
        "search",
        "send",
        "set_role",
        "transfer",
        "typing",
        "unban",
    ]


# --- Malformed frames --------------------------------------------------------------------------

_LONG_ROOM = "a" * 65
_P = pytest.param
MALFORMED = [
    # The frame itself.
    _P(b"\xff\xfe\xfd", ErrorCode.BAD_ENCODING, None, id="not-utf8"),
    _P(b'{"type":"ping","ref":"\xff"}', ErrorCode.BAD_ENCODING, None, id="not-utf8-in-string"),
    _P(b'{"type":"ping"}\xc3', ErrorCode.BAD_ENCODING, None, id="not-utf8-trailing-byte"),
    _P('{"type":"ping","ref":"\ud800"}', ErrorCode.BAD_ENCODING, None, id="str-lone-surrogate"),
    _P(b"hello", ErrorCode.BAD_JSON, None, id="not-json"),
    _P(b"", ErrorCode.BAD_JSON, None, id="empty-frame"),
    _P(b'{"type":"join","room":"gen', ErrorCode.BAD_JSON, None, id="truncated-json"),
    _P(b'{"type":"ping"} {"type":"ping"}', ErrorCode.BAD_JSON, None, id="two-documents"),
    _P(b"{" * 10_000, ErrorCode.BAD_JSON, None, id="truncated-deep-nesting"),
    _P(b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}", ErrorCode.BAD_JSON, None, id="deep-nesting"),
    _P(b'[{"type":"ping"}]', ErrorCode.NOT_AN_OBJECT, None, id="json-array"),
    _P(b"42", ErrorCode.NOT_AN_OBJECT, None, id="json-number"),
    _P(b'"ping"', ErrorCode.NOT_AN_OBJECT, None, id="json-string"),
    _P(b"null", ErrorCode.NOT_AN_OBJECT, None, id="json-null"),
    _P(b"[" * 5000, ErrorCode.NOT_AN_OBJECT, None, id="deep-array"),
    # The type.
    _P(b"{}", ErrorCode.UNKNOWN_TYPE, None, id="empty-object"),
    _P(_frame(room="general"), ErrorCode.UNKNOWN_TYPE, None, id="missing-type"),
    _P(_frame(type="shout", room="general"), ErrorCode.UNKNOWN_TYPE, None, id="unknown-type"),
    _P(_frame(type="welcome", user="a"), ErrorCode.UNKNOWN_TYPE, None, id="event-type-sent"),
    _P(_frame(type="PING"), ErrorCode.UNKNOWN_TYPE, None, id="type-wrong-case"),
    _P(_frame(type=1), ErrorCode.UNKNOWN_TYPE, None, id="type-int"),
    _P(_frame(type=None), ErrorCode.UNKNOWN_TYPE, None, id="type-null"),
    _P(_frame(type=["ping"]), ErrorCode.UNKNOWN_TYPE, None, id="type-list"),
    # Fields present or not.
    _P(_frame(type="hello"), ErrorCode.MISSING_FIELD, None, id="hello-missing-token"),
    _P(_frame(type="send", room="general"), ErrorCode.MISSING_FIELD, None, id="send-no-text"),
    _P(_frame(type="send", text="hi"), ErrorCode.MISSING_FIELD, None, id="send-no-room"),
    _P(_frame(type="ping", id=1), ErrorCode.UNKNOWN_FIELD, None, id="ping-unknown-field"),
    _P(
        _frame(type="send", room="general", text="hi", clientId="c"),
        ErrorCode.UNKNOWN_FIELD,
        None,
        id="send-misspelt-client-id",
    ),
    # Field types and values.
    _P(_frame(type="join", room=1), ErrorCode.BAD_FIELD, None, id="room-int"),
    _P(_frame(type="join", room=None), ErrorCode.BAD_FIELD, None, id="room-null"),
    _P(_frame(type="join", room="General"), ErrorCode.BAD_FIELD, None, id="room-uppercase"),
    _P(_frame(type="join", room=_LONG_ROOM), ErrorCode.BAD_FIELD, None, id="room-65-chars"),
    _P(_frame(type="join", room="my room"), ErrorCode.BAD_FIELD, None, id="room-space"),
    _P(_frame(type="join", room=""), ErrorCode.BAD_FIELD, None, id="room-empty"),
    _P(_frame(type="join", room="-dash"), ErrorCode.BAD_FIELD, None, id="room-leading-dash"),
    _P(_frame(type="join", room="café"), ErrorCode.BAD_FIELD, None, id="room-non-ascii"),
    _P(_frame(type="join", room="general\n"), ErrorCode.BAD_FIELD, None, id="room-newline"),
    _P(_frame(type="send", room="g", text=["hi"]), ErrorCode.BAD_FIELD, None, id="text-list"),
    _P(_frame(type="send", room="g", text=None), ErrorCode.BAD_FIELD, None, id="text-null"),
    _P(_frame(type="history", room="g", limit="5"), ErrorCode.BAD_FIELD, None, id="limit-str"),
    _P(_frame(type="history", room="g", limit=0), ErrorCode.BAD_FIELD, None, id="limit-0"),
    _P(_frame(type="history", room="g", limit=201), ErrorCode.BAD_FIELD, None, id="limit-201"),
    _P(_frame(type="history", room="g", limit=5.0), ErrorCode.BAD_FIELD, None, id="limit-float"),
    _P(_frame(type="history", room="g", limit=None), ErrorCode.BAD_FIELD, None, id="limit-null"),
    _P(_frame(type="history", room="g", before_seq=0), ErrorCode.BAD_FIELD, None, id="before-0"),
    _P(
        _frame(type="history", room="g", before_seq=MAX_SEQ + 1),
        ErrorCode.BAD_FIELD,
        None,
        id="before-seq-over-int64",
    ),
    _P(_frame(type="hello", token=""), ErrorCode.BAD_FIELD, None, id="token-empty"),
    _P(_frame(type="hello", token="t" * 257), ErrorCode.BAD_FIELD, None, id="token-257-chars"),
    _P(_frame(type="hello", token=123), ErrorCode.BAD_FIELD, None, id="token-int"),
    _P(
        _frame(type="hello", token="t", resume={"general": -1}),
        ErrorCode.BAD_FIELD,
        None,
        id="resume-negative-seq",
    ),
    _P(
        _frame(type="hello", token="t", resume={"general": MAX_SEQ + 1}),
        ErrorCode.BAD_FIELD,
        None,
        id="resume-seq-over-int64",
    ),
    _P(
        _frame(type="hello", token="t", resume={"Bad Room": 1}),
        ErrorCode.BAD_FIELD,
        None,
        id="resume-bad-room",
    ),
    _P(
        _frame(type="hello", token="t", resume=["general", 1]),
        ErrorCode.BAD_FIELD,
        None,
        id="resume-list",
    ),
    _P(
        _frame(type="hello", token="t", resume={f"r{i}": 0 for i in range(1001)}),
        ErrorCode.BAD_FIELD,
        None,
        id="resume-1001-rooms",
    ),
    _P(
        _frame(type="send", room="g", text="hi", client_id=""),
        ErrorCode.BAD_FIELD,
        None,
        id="client-id-empty",
    ),
    _P(
        _frame(type="send", room="g", text="hi", client_id="c" * 65),
        ErrorCode.BAD_FIELD,
        None,
        id="client-id-65-chars",
    ),
    _P(_frame(type="ping", ref="r" * 65), ErrorCode.BAD_FIELD, None, id="ref-65-chars"),
    _P(_frame(type="ping", ref=5), ErrorCode.BAD_FIELD, None, id="ref-int"),
    # Text content.
    _P(_frame(type="send", room="g", text=""), ErrorCode.TEXT_EMPTY, None, id="text-empty"),
    _P(
        _frame(type="send", room="g", text=" \t\n\u00a0\u3000"),
        ErrorCode.TEXT_EMPTY,
        None,
        id="text-whitespace-only",
    ),
    _P(
        _frame(type="send", room="g", text="x" * (DEFAULT_MAX_TEXT + 1)),
        ErrorCode.TEXT_TOO_LONG,
        None,
        id="text-4001-chars",
    ),
    _P(
        _frame(type="send", room="g", text="日" * (DEFAULT_MAX_TEXT + 1)),
        ErrorCode.TEXT_TOO_LONG,
        None,
        id="text-4001-cjk-chars",
    ),
    _P(
        _frame(type="send", room="g", text="x" * 11),
        ErrorCode.TEXT_TOO_LONG,
        10,
        id="text-over-custom-max",
    ),
    # Characters that are not stored (PostgreSQL's text cannot hold NUL; see docs/protocol.md).
    _P(_frame(type="send", room="g", text="a\u0000b"), ErrorCode.TEXT_INVALID, None, id="text-nul"),
    _P(b'{"type":"send","room":"g","text":"\\u0000"}', ErrorCode.TEXT_INVALID, None, id="nul-only"),
    _P(_frame(type="send", room="g", text="\x1b[2J"), ErrorCode.TEXT_INVALID, None, id="text-esc"),
    _P(_frame(type="send", room="g", text="a\x7f"), ErrorCode.TEXT_INVALID, None, id="text-del"),
    _P(_frame(type="send", room="g", text="a\x9b"), ErrorCode.TEXT_INVALID, None, id="text-c1"),
    _P(_frame(type="send", room="g", text="a\uffff"), ErrorCode.TEXT_INVALID, None, id="text-ffff"),
    _P(_frame(type="send", room="g", text="\x00" * 4001), ErrorCode.TEXT_TOO_LONG, None, id="long"),
    _P(
        _frame(type="send", room="g", text="hi", client_id="c\u0000"),
        ErrorCode.BAD_FIELD,
        None,
        id="client-id-nul",
    ),
    # A lone surrogate escape: not a character, so not valid JSON text (RFC 8259 section 8.2).
    _P(b'{"type":"send","room":"g","text":"a\\ud800b"}', ErrorCode.BAD_JSON, None, id="lone-high"),
    _P(b'{"type":"send","room":"g","text":"\\udc00"}', ErrorCode.BAD_JSON, None, id="lone-low"),
    _P(b'{"type":"send","room":"g","text":"\\ud800"}', ErrorCode.BAD_JSON, None, id="lone-at-end"),
]


@pytest.mark.parametrize(("data", "code", "max_text"), MALFORMED)
def test_malformed_frame_is_rejected_with_its_code(
    data: bytes | str, code: ErrorCode, max_text: int | None
) -> None:
    kwargs = {} if max_text is None else {"max_text": max_text}
    assert _code_of(data, **kwargs) is code


def _minimal(cls: type[Any]) -> dict[str, Any]:
    values = {"room": "general", "text": "hi", "token": "tok", "seq": 1, "id": 1, "query": "q"}
    values["user"] = "bob"
    values["role"] = "admin"
    required = [f.name for f in msgspec.structs.fields(cls) if f.required]
    return {"type": _tag(cls), **{name: values[name] for name in required}}


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=_tag)
def test_minimal_request_of_each_type_is_valid(cls: type[Any]) -> None:
    assert type(decode(json.dumps(_minimal(cls)))) is cls


_REQUIRED = [
    pytest.param(cls, f.name, id=f"{_tag(cls)}-{f.name}")
    for cls in REQUEST_TYPES
    for f in msgspec.structs.fields(cls)
    if f.required
]


@pytest.mark.parametrize(("cls", "field"), _REQUIRED)
def test_each_missing_required_field_is_named(cls: type[Any], field: str) -> None:
    frame = _minimal(cls)
    del frame[field]
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(frame))
    assert info.value.code is ErrorCode.MISSING_FIELD
    assert f"`{field}`" in info.value.message


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=_tag)
def test_unknown_field_is_rejected_for_each_type(cls: type[Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({**_minimal(cls), "colour": "red"}))
    assert info.value.code is ErrorCode.UNKNOWN_FIELD
    assert "`colour`" in info.value.message


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param({"type": "join", "room": "BAD"}, ErrorCode.BAD_FIELD, id="bad-field"),
        pytest.param({"type": "join"}, ErrorCode.MISSING_FIELD, id="missing-field"),
        pytest.param({"type": "ping", "x": 1}, ErrorCode.UNKNOWN_FIELD, id="unknown-field"),
        pytest.param({"type": "shout"}, ErrorCode.UNKNOWN_TYPE, id="unknown-type"),
        pytest.param({"room": "general"}, ErrorCode.UNKNOWN_TYPE, id="missing-type"),
        pytest.param({"type": "send", "room": "g", "text": " "}, ErrorCode.TEXT_EMPTY, id="empty"),
        pytest.param(
            {"type": "send", "room": "g", "text": "x" * 4001}, ErrorCode.TEXT_TOO_LONG, id="long"
        ),
    ],
)
def test_ref_is_salvaged_into_the_error(frame: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps({**frame, "ref": "req-17"}))
    assert info.value.code is code
    assert info.value.ref == "req-17"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"type":"join","ref":"r1",', id="not-json"),
        pytest.param(_frame(type="join", room="BAD", ref="r" * 65), id="ref-too-long"),
        pytest.param(_frame(type="join", room="BAD", ref=7), id="ref-not-a-string"),
        pytest.param(b'[{"ref":"r1"}]', id="not-an-object"),
    ],
)
def test_ref_is_not_salvaged_when_unusable(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.ref is None


# --- Text limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x" * DEFAULT_MAX_TEXT, id="ascii"),
        pytest.param("日" * DEFAULT_MAX_TEXT, id="cjk-12000-bytes"),
        pytest.param("😀" * DEFAULT_MAX_TEXT, id="astral-16000-bytes"),
    ],
)
def test_text_at_the_limit_is_accepted_counting_characters(text: str) -> None:
    request = decode(_frame(type="send", room="general", text=text))
    assert isinstance(request, Send)
    assert request.text == text


def test_custom_max_text_is_honoured_at_the_limit() -> None:
    request = decode(_frame(type="send", room="g", text="x" * 10), max_text=10)
    assert isinstance(request, Send)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("line one\nline two\r\n\tindented", id="tab-newline-cr"),
        pytest.param("\u00a0\u2028\u200b\u202e\ufeff\ufffd x", id="format-and-separators"),
        pytest.param("\U0001f600\U0010fffd", id="astral"),
        pytest.param("\ufdd0\U0001fffe", id="other-noncharacters"),
    ],
)
def test_text_keeps_tab_newline_and_every_non_control_character(text: str) -> None:
    request = decode(_frame(type="send", room="g", text=text))
    assert isinstance(request, Send)
    assert request.text == text


@_FAST
@given(_storable_text, st.integers(0), st.sampled_from(_REFUSED_CHARACTERS))
def test_any_refused_character_anywhere_in_text_is_text_invalid(
    text: str, where: int, bad: str
) -> None:
    where %= len(text) + 1
    frame = _frame(type="send", room="g", text=text[:where] + bad + text[where:], ref="s")
    with pytest.raises(ProtocolError) as info:
        decode(frame)
    assert (info.value.code, info.value.ref) == (ErrorCode.TEXT_INVALID, "s")
    assert f"U+{ord(bad):04X}" in info.value.message


def test_the_refused_characters_are_exactly_the_documented_ones() -> None:
    refused = [chr(c) for c in range(0x110000) if protocol.refused_character(chr(c)) is not None]
    assert refused == _REFUSED


def test_text_keeps_surrounding_whitespace() -> None:
    request = decode(_frame(type="send", room="g", text="  hi\n"))
    assert isinstance(request, Send)
    assert request.text == "  hi\n"


# --- Properties --------------------------------------------------------------------------------

_TYPE_NAMES = [_tag(cls) for cls in REQUEST_TYPES] + [_tag(cls) for cls in EVENT_TYPES]
_FIELD_NAMES = sorted(
    {f for cls in (*REQUEST_TYPES, *EVENT_TYPES) for f in cls.__struct_fields__} | {"type"}
)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_frame_like = st.dictionaries(
    st.sampled_from(_FIELD_NAMES) | st.text(max_size=8),
    _json_values | st.sampled_from(_TYPE_NAMES) | st.sampled_from(["general", "a" * 65]),
    max_size=6,
)


def _decode_or_protocol_error(data: bytes | str) -> None:
    try:
        request = decode(data)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.ref is None or (isinstance(exc.ref, str) and len(exc.ref) <= 64)
    else:
        assert isinstance(request, REQUEST_TYPES)
        if isinstance(data, bytes):
            data.decode()  # a frame that is not UTF-8 is never accepted


@_FAST
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_raises_only_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


@_FAST
@given(st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)))
def test_decode_of_arbitrary_str_raises_only_protocol_error(data: str) -> None:
    _decode_or_protocol_error(data)


@_FAST
@given(_json_values)
def test_decode_of_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(msgspec.json.encode(value))


@_FAST
@given(_frame_like)
def test_decode_of_frame_like_objects_raises_only_protocol_error(value: dict[str, Any]) -> None:
    _decode_or_protocol_error(msgspec.json.encode(value))


_rooms = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,63}", fullmatch=True)
_refs = st.none() | st.text(max_size=64)
_texts = _storable_text.filter(str.strip)
_seqs = st.integers(min_value=0, max_value=MAX_SEQ)
_valid_requests = st.one_of(
    st.builds(
        Hello,
        token=st.text(min_size=1, max_size=256),
        resume=st.none() | st.dictionaries(_rooms, _seqs, max_size=5),
        ref=_refs,
    ),
    st.builds(Join, room=_rooms, ref=_refs),
    st.builds(Leave, room=_rooms, ref=_refs),
    st.builds(
        Send,
        room=_rooms,
        text=_texts,
        client_id=st.none() | st.text(_storable, min_size=1, max_size=64),
        ref=_refs,
    ),
    st.builds(
        Edit,
        room=_rooms,
        id=st.integers(min_value=1, max_value=MAX_SEQ),
        text=_texts,
        client_id=st.none() | st.text(_storable, min_size=1, max_size=64),
        ref=_refs,
    ),
    st.builds(
        Delete,
        room=_rooms,
        id=st.integers(min_value=1, max_value=MAX_SEQ),
        client_id=st.none() | st.text(_storable, min_size=1, max_size=64),
        ref=_refs,
    ),
    st.builds(
        HistoryRequest,
        room=_rooms,
        before_seq=st.none() | st.integers(min_value=1, max_value=MAX_SEQ),
        limit=st.integers(min_value=1, max_value=MAX_HISTORY_LIMIT),
        ref=_refs,
    ),
    st.builds(TypingRequest, room=_rooms, ref=_refs),
    st.builds(Ping, ref=_refs),
)


@_FAST
@given(_valid_requests)
def test_valid_requests_round_trip(request_: Any) -> None:
    assert decode(msgspec.json.encode(request_)) == request_


@_FAST
@given(_valid_requests, st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]), st.integers(0))
def test_invalid_utf8_anywhere_in_a_valid_frame_is_bad_encoding(
    request_: Any, junk: bytes, where: int
) -> None:
    wire = msgspec.json.encode(request_)
    where %= len(wire) + 1
    assert _code_of(wire[:where] + junk + wire[where:]) is ErrorCode.BAD_ENCODING


_ids = st.integers(min_value=1, max_value=2**53)
_messages = st.builds(
    Message,
    room=_rooms,
    id=_ids,
    seq=_ids,
    user=st.text(max_size=20),
    text=_texts,
    ts=_ids,
    client_id=st.none() | st.text(min_size=1, max_size=64),
    edited_at=st.none() | _ids,
    deleted=st.booleans(),
)
_valid_events = st.one_of(
    _messages,
    st.builds(
        Edited,
        room=_rooms,
        seq=_ids,
        id=_ids,
        text=_texts,
        edited_at=_ids,
        client_id=st.none() | st.text(min_size=1, max_size=64),
    ),
    st.builds(Deleted, room=_rooms, seq=_ids, id=_ids, client_id=st.none() | st.text(max_size=64)),
    st.builds(Ack, room=_rooms, id=_ids, seq=_ids, client_id=st.none() | st.text(max_size=64)),
    st.builds(HistoryPage, room=_rooms, messages=st.lists(_messages, max_size=3)),
    st.builds(Joined, room=_rooms, last_seq=_seqs, online=st.lists(st.text(max_size=8))),
    st.builds(Error, code=st.sampled_from(list(ErrorCode)), message=st.text(), ref=_refs),
)


@_FAST
@given(_valid_events)
def test_valid_events_round_trip(event: Any) -> None:
    assert decode_event(encode(event)) == event


# --- Event decoding errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(b"nope", ErrorCode.BAD_JSON, id="not-json"),
        pytest.param(b"[1]", ErrorCode.NOT_AN_OBJECT, id="array"),
        pytest.param(_frame(type="shout"), ErrorCode.UNKNOWN_TYPE, id="unknown-type"),
        pytest.param(_frame(type="ack", room="g"), ErrorCode.MISSING_FIELD, id="missing-field"),
        pytest.param(
            _frame(type="presence", room="g", user="u", status="away"),
            ErrorCode.BAD_FIELD,
            id="bad-status",
        ),
    ],
)
def test_decode_event_maps_bad_input_to_codes(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_event(data)
    assert info.value.code is code


def test_decode_event_ignores_unknown_fields_for_forward_compatibility() -> None:
    assert decode_event(_frame(type="pong", ref="p", added_in_v1_1=True)) == Pong(ref="p")


# --- Codes and the public surface --------------------------------------------------------------


def test_error_codes_are_snake_case_strings() -> None:
    for code in ErrorCode:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code.value), code
        assert isinstance(code, str)


def test_close_codes_are_in_the_allowed_ranges() -> None:
    for code in CloseCode:
        assert 1000 <= code <= 1011 or 4000 <= code <= 4999, code


def test_protocol_version_and_error_root() -> None:
    # The public surface itself is pinned in tests/test_exports.py.
    assert protocol.PROTOCOL_VERSION == 1
    assert issubclass(protocol.ProtocolError, protocol.ChatError)


def test_protocol_imports_no_io_modules() -> None:
    forbidden = ["trio", "socket", "sqlite3", "_sqlite3", "ssl", "asyncio", "storage", "server"]
    script = f"import sys, protocol; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == ""


# --- docs/protocol.md --------------------------------------------------------------------------

_DOC = REPO_ROOT / "docs" / "protocol.md"


def _doc_frames() -> list[str]:
    return re.findall(r"```json\n(.*?)```", _DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_every_json_example_in_the_docs_is_a_valid_frame() -> None:
    seen: set[type[Any]] = set()
    for example in _doc_frames():
        try:
            seen.add(type(decode(example)))
        except ProtocolError:
            event = decode_event(example)  # `history` and `typing` name a request and an event
            assert json.loads(encode(event)) == json.loads(example), example
            seen.add(type(event))
    assert seen == set(REQUEST_TYPES) | set(EVENT_TYPES)


def test_worked_example_frames_are_valid_and_errors_match() -> None:
    blocks = re.findall(r"```text\n(.*?)```", _DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    lines = [
        (line[0], line[2:])
        for block in blocks
        for line in block.splitlines()
        if line.startswith(("> {", "< {"))
    ]
    assert len(lines) >= 10
    for i, (direction, frame) in enumerate(lines):
        if direction == "<":
            assert json.loads(encode(decode_event(frame))) == json.loads(frame), frame
            continue
        try:
            decode(frame)
        except ProtocolError as exc:  # the transcript must show the exact error decode gives
            expected = {"type": "error", "code": exc.code, "message": exc.message}
            if exc.ref is not None:
                expected["ref"] = exc.ref
            assert lines[i + 1] == ("<", lines[i + 1][1]), frame
            assert json.loads(lines[i + 1][1]) == expected, frame


@pytest.mark.parametrize("bad", ["\x0b", "\x1c", "\x1f", "\x85"])
def test_a_refused_control_that_strip_removes_is_invalid_not_empty(bad: str) -> None:
    """Hypothesis found " \\x0b" reported as text_empty: strip() removes those controls."""
    with pytest.raises(ProtocolError) as info:
        decode(_frame(type="send", room="g", text=" " + bad, ref="s"))
    assert info.value.code == ErrorCode.TEXT_INVALID


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param({"text": " \n"}, ErrorCode.TEXT_EMPTY, id="empty"),
        pytest.param({"text": "a\x00b"}, ErrorCode.TEXT_INVALID, id="nul"),
        pytest.param({"text": "x" * (DEFAULT_MAX_TEXT + 1)}, ErrorCode.TEXT_TOO_LONG, id="long"),
        pytest.param({"text": "ok", "id": 0}, ErrorCode.BAD_FIELD, id="id-zero"),
        pytest.param({"text": "ok", "client_id": "c\x00"}, ErrorCode.BAD_FIELD, id="client-id"),
    ],
)
def test_edit_text_is_validated_like_send_text(frame: dict[str, Any], code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(_frame(**{"type": "edit", "room": "g", "id": 1, "ref": "e", **frame}))
    assert info.value.code == code
    assert info.value.ref == "e"


def test_delete_has_no_text_field() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(_frame(type="delete", room="g", id=1, text="x"))
    assert info.value.code == ErrorCode.UNKNOWN_FIELD
