"""What every service's settings share: how they are read, where a service listens, how it logs.

Each service subclasses :class:`ServiceSettings` with its own environment prefix (``EMBEDDER_``,
``SEARCH_``); groups of related settings subclass :class:`SettingsGroup`, each with its own
prefix, and are handed whole to the one component that consumes them.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsGroup(BaseSettings):
    """Read from the environment first, then a ``.env`` file; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)


class ServiceSettings(SettingsGroup):
    host: str = "127.0.0.1"
    port: int = 0
    log_level: str = "INFO"
    log_json: bool = True
