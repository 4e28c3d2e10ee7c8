"""Responders: what turns the user's words into the reply text (:mod:`.base` for the interface)."""

from __future__ import annotations

from typing import Any

from appliance.orchestrator.respond.base import Responder, ResponderError, Turn
from appliance.orchestrator.respond.echo import EchoResponder

__all__ = ["RESPONDER_KINDS", "EchoResponder", "Responder", "ResponderError", "Turn", "create_responder"]

RESPONDER_KINDS = ("echo", "openai")


def create_responder(kind: str, **settings: Any) -> Responder:
    """Build a responder by kind. Settings that are ``None`` are left at their defaults, and
    ``url`` is accepted for ``base_url``, so the orchestrator's ``[responder]`` section can be
    passed as it is. ``echo`` takes no settings and ignores any given."""
    kind = kind.strip().lower()
    if kind == "echo":
        return EchoResponder()
    if kind == "openai":
        from appliance.orchestrator.respond.openai import OpenAIResponder  # httpx only when used

        given = {k: v for k, v in settings.items() if v is not None}
        if "url" in given:
            given.setdefault("base_url", given.pop("url"))
        missing = [k for k in ("base_url", "model") if not given.get(k)]
        if missing:
            needs = " and ".join(missing)
            raise ValueError(f"responder 'openai' needs {needs} (e.g. base_url='http://127.0.0.1:8081/v1')")
        try:
            return OpenAIResponder(**given)
        except TypeError as exc:
            raise ValueError(f"bad settings for responder 'openai': {exc}") from None
    raise ValueError(f"unknown responder kind {kind!r}; valid kinds: {', '.join(RESPONDER_KINDS)}")
