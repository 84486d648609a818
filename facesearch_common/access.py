"""Who may call a service, framework-free: API keys and their scopes, loopback, allowed hosts.

Settings of both services import this module (the HTTP side is ``facesearch_common.access_http``).
A key list is written ``key:scope`` or ``key:scope:coll1|coll2``, comma-separated, e.g.
``SEARCH_API_KEYS=3f9c...:write,77ab...:read:family|friends``: the scope is ``read`` or ``write``
(``write`` implies ``read``); listed collections limit the key to those. Keys are secrets: they
are held as ``SecretStr`` and only ever named by :attr:`ApiKey.key_id`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from prometheus_client import Counter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
)
from pydantic_settings import NoDecode

Scope = Literal["read", "write"]
AuthFailure = Literal["missing_key", "unknown_key", "scope", "collection", "host", "origin"]

AUTH_FAILURES = Counter(
    "auth_failures_total", "Requests refused by access control, by reason (no key material)", ["reason"]
)

# A key shorter than this is too easy to guess for a credential sent on every request.
MIN_KEY_CHARS = 16
LOOPBACK_NAMES = frozenset({"localhost"})
DEFAULT_ALLOWED_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class ApiKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    secret: SecretStr
    scope: Scope
    # None: every collection.
    collections: frozenset[str] | None = None
    # The secret's SHA-256, computed once here rather than on every request by find_key.
    _digest: bytes = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._digest = _sha256(self.secret.get_secret_value())

    @property
    def key_id(self) -> str:
        """A short, non-reversible name for the key, safe to log."""
        return self._digest.hex()[:8]

    def allows(self, scope: Scope) -> bool:
        return self.scope == "write" or scope == "read"


def _parse_key(entry: str, number: int) -> ApiKey:
    """One ``key:scope[:coll1|coll2]`` entry; errors name it by its place, never by its text."""
    secret, _, rest = entry.partition(":")
    scope, _, collections = rest.partition(":")
    where = f"API key {number} of the list"
    if len(secret) < MIN_KEY_CHARS:
        raise ValueError(f"{where}: a key must be at least {MIN_KEY_CHARS} characters")
    if not (secret.isascii() and secret.isprintable()) or " " in secret:
        raise ValueError(f"{where}: a key is printable ASCII without spaces (it travels in a header)")
    if scope not in ("read", "write"):
        raise ValueError(f"{where}: the scope must be read or write, not {scope!r}")
    names = [name.strip() for name in collections.split("|")] if collections else None
    if names is not None and not all(names):
        raise ValueError(f"{where}: an empty collection name in {collections!r}")
    return ApiKey(
        secret=SecretStr(secret), scope=scope, collections=None if names is None else frozenset(names)
    )


def parse_api_keys(value: Any) -> Any:
    """``key:scope[:coll1|coll2],...`` as ApiKeys; anything else is left for pydantic to judge."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    keys = [_parse_key(entry, number) for number, entry in enumerate(entries, start=1)]
    if len({key.secret.get_secret_value() for key in keys}) != len(keys):
        raise ValueError("the same API key is listed twice")
    return keys


def split_commas(value: Any) -> Any:
    """``a,b,c`` as a list (settings from the environment); anything else is left to pydantic."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Read from the environment as plain comma-separated text, not JSON (NoDecode).
ApiKeys = Annotated[list[ApiKey], NoDecode, BeforeValidator(parse_api_keys)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
Hosts = Annotated[list[str], NoDecode, BeforeValidator(split_commas), Field(min_length=1)]


def _long_enough(secret: SecretStr | None) -> SecretStr | None:
    if secret is not None and len(secret.get_secret_value()) < MIN_KEY_CHARS:
        raise ValueError(f"an API key must be at least {MIN_KEY_CHARS} characters")
    return secret


# A single key; an empty value (``EMBEDDER_API_KEY=``) means none.
OptionalKey = Annotated[
    SecretStr | None, BeforeValidator(lambda value: value or None), AfterValidator(_long_enough)
]


def find_key(keys: Sequence[ApiKey], presented: str) -> ApiKey | None:
    """The configured key equal to ``presented``, compared in constant time.

    Digests are compared, not the keys, so that neither a key's length nor its prefix shows in
    the time taken; every configured key is compared, whichever matches.
    """
    digest = _sha256(presented)
    match = None
    for key in keys:
        if hmac.compare_digest(digest, key._digest):
            match = key
    return match


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def require_keys_off_loopback(host: str, has_keys: bool, host_setting: str, key_setting: str) -> None:
    """Refuse settings that would serve every reachable client without a key."""
    if not has_keys and not is_loopback(host):
        raise ValueError(
            f"{host_setting}={host} is reachable from other machines: set {key_setting} "
            "(see README, Access), or bind to 127.0.0.1"
        )


def host_allowed(host_header: str, allowed: Sequence[str]) -> bool:
    """Whether a request's Host (port included or not) is in ``allowed``.

    ``*`` allows any host; ``*.example.org`` any subdomain of example.org; IPv6 is written ``::1``
    or ``[::1]``.
    """
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1]  # "[::1]:8000" -> "[::1]"
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or host in (pattern, f"[{pattern}]"):
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def settings_errors(error: ValidationError) -> str:
    """What is wrong with a service's settings, for its start-up message.

    Only each error's place and message: pydantic's own text echoes the inputs, which may be keys.
    """
    return "; ".join(
        f"{'.'.join(str(part) for part in entry['loc']) or 'settings'}: {entry['msg']}"
        for entry in error.errors()
    )
