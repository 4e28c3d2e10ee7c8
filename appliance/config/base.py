"""The base of every settings model: unknown keys are errors, sources in order of precedence."""

from __future__ import annotations

import contextvars
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from appliance.discovery import split_host_port

_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_path", default=None)


class ConfigError(ValueError):
    """A configuration file or override that does not validate; the message names the bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APPLIANCE_", env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class _RedisSection(_Section):
    key_prefix: str = Field(
        "appliance:", pattern=r"^[A-Za-z0-9_.:/-]{0,64}$", description="prefix of every Redis key"
    )
    password_file: Path | None = Field(
        None, description="first line is the Redis password (or APPLIANCE_REDIS_PASSWORD)"
    )
    ca_file: Path | None = Field(
        None,
        description="PEM CA that signed the Redis server's certificate (rediss://; absent: the system's)",
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate, for a Redis that asks for one (tls-auth-clients)"
    )
    key_file: Path | None = Field(None, description="private key of that client certificate")
    allow_plaintext: bool = Field(
        False, description="redis:// to a Redis off loopback (warned about at every start)"
    )


def _redis_scheme(v: str | None) -> str | None:
    if v and not v.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://127.0.0.1:6379/0)")
    return v or None


def _host_port_or_none(v: str | None) -> str | None:
    if v:
        split_host_port(v)
    return v or None
