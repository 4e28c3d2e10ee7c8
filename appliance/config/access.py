"""``[access]``: who may use the appliance (docs/access.md)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from appliance.config.base import _Section


class AccessSettings(_Section):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="auto: every client but a direct one from this machine needs the access secret; "
        "true: every client does; false: none does (a warning at every start beyond loopback)",
    )
    secret_file: Path | None = Field(
        None,
        description="the access secret, 0600 (absent: /etc/appliance/access_secret if it exists, "
        "else $XDG_STATE_HOME/appliance/access_secret)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description='more Origins the page may be served from besides the appliance\'s own names, e.g. "https://voice.example.org"',
    )
    wyoming_allow: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="client addresses or networks `appliance wyoming` serves (the protocol has no authentication)",
    )
    cookie_max_age_days: int = Field(
        365,
        ge=1,
        le=3650,
        description="how long a paired browser stays paired (rotating the secret ends it sooner)",
    )
    session_starts_per_minute: int = Field(
        30, ge=1, description="sessions (WebSocket, WebRTC) one client address may start per minute"
    )
    failed_attempts_per_minute: int = Field(
        10, ge=1, description="wrong or missing secrets one client address may send per minute before 429"
    )

    @field_validator("wyoming_allow")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an address or network (e.g. 192.168.1.0/24)") from None
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]:
                raise ValueError(f"{origin!r} is not an origin like https://voice.example.org[:PORT]")
        return v
