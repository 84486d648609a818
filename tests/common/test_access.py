"""API keys, loopback and Host matching, as both services' settings and middleware use them."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import BaseModel, ValidationError

from facesearch_common.access import (
    ApiKeys,
    find_key,
    host_allowed,
    is_loopback,
    parse_api_keys,
    settings_errors,
)

WRITER = "w" * 20
READER = "r" * 20


class Keys(BaseModel):
    keys: ApiKeys


def test_key_list_syntax() -> None:
    keys = parse_api_keys(f" {WRITER}:write , {READER}:read:family|friends,")
    assert [(key.secret.get_secret_value(), key.scope, key.collections) for key in keys] == [
        (WRITER, "write", None),
        (READER, "read", frozenset({"family", "friends"})),
    ]
    assert parse_api_keys("") == []
    # A collection name may hold a colon (the API's names do): only the first two split.
    [key] = parse_api_keys(f"{READER}:read:team:a|b")
    assert key.collections == frozenset({"team:a", "b"})


def test_write_implies_read() -> None:
    writer, reader = parse_api_keys(f"{WRITER}:write,{READER}:read")
    assert writer.allows("read") and writer.allows("write")
    assert reader.allows("read") and not reader.allows("write")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short:read", "at least 16 characters"),
        (f"{WRITER}:admin", "API key 1 of the list: the scope must be read or write, not 'admin'"),
        (f"{READER}:read,{WRITER}", "API key 2 of the list: the scope must be read or write, not ''"),
        (f"{WRITER}:read:family||x", "an empty collection name"),
        ("with spaces inside it:read", "printable ASCII without spaces"),
        (f"{WRITER}:read,{WRITER}:write", "the same API key is listed twice"),
    ],
)
def test_bad_key_lists_are_refused_naming_no_key(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Keys(keys=text)
    summary = settings_errors(raised.value)
    assert message in summary
    assert WRITER not in summary and "short" not in summary and "spaces inside" not in summary


def test_a_key_is_named_in_logs_by_a_digest_prefix() -> None:
    [key] = parse_api_keys(f"{WRITER}:write")
    assert key.key_id == hashlib.sha256(WRITER.encode()).hexdigest()[:8]
    assert len(key.key_id) == 8 and key.key_id not in WRITER
    assert WRITER not in repr(key) and WRITER not in str(Keys(keys=f"{WRITER}:write"))


def test_find_key_matches_the_whole_key_only() -> None:
    keys = parse_api_keys(f"{WRITER}:write,{READER}:read")
    assert find_key(keys, WRITER) is keys[0]
    assert find_key(keys, READER) is keys[1]
    for wrong in [WRITER[:-1], WRITER + "w", READER[:1], "", "W" * 20, f"{WRITER}:write"]:
        assert find_key(keys, wrong) is None, wrong
    assert find_key([], WRITER) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8000", True),
        ("LOCALHOST", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("attacker.example", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io:8000", False),
        ("", False),
        ("api.example.org", True),
        ("example.org", False),
    ],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["127.0.0.1", "localhost", "::1", "*.example.org"]) is allowed


def test_a_star_allows_any_host() -> None:
    assert host_allowed("anything.example:1234", ["*"])
