"""Responders: what turns the user's words into the reply text (:mod:`.base` for the interface)."""

from __future__ import annotations

import inspect
from typing import Any

from appliance.orchestrator.respond.base import Responder, ResponderError, Turn
from appliance.orchestrator.respond.echo import EchoResponder

__all__ = ["RESPONDER_KINDS", "EchoResponder", "Responder", "ResponderError", "Turn", "create_responder"]

RESPONDER_KINDS = ("echo", "openai", "embedded")


def create_responder(kind: str, engine: Any = None, **settings: Any) -> Responder:
    """Build a responder by kind. Settings that are ``None`` are left at their defaults, those the
    kind does not take are ignored, and ``url`` is accepted for ``base_url``, so the orchestrator's
    ``[responder]`` section can be passed as it is. ``echo`` takes no settings. ``embedded`` needs
    the loaded model (``engine``, a :class:`~appliance.orchestrator.respond.llama.LlamaEngine`),
    shared by every session."""
    kind = kind.strip().lower()
    if kind == "echo":
        return EchoResponder()
    given = {k: v for k, v in settings.items() if v is not None}
    if kind == "openai":
        from appliance.orchestrator.respond.openai import OpenAIResponder  # httpx only when used

        if "url" in given:
            given.setdefault("base_url", given.pop("url"))
        missing = [k for k in ("base_url", "model") if not given.get(k)]
        if missing:
            needs = " and ".join(missing)
            raise ValueError(f"responder 'openai' needs {needs} (e.g. base_url='http://127.0.0.1:8081/v1')")
        return _build(OpenAIResponder, kind, given)
    if kind == "embedded":
        from appliance.orchestrator.respond.embedded import EmbeddedResponder  # llama.cpp only when used

        if engine is None:
            raise ValueError("responder 'embedded' needs the loaded model (engine=LlamaEngine)")
        return _build(EmbeddedResponder, kind, given, engine)
    raise ValueError(f"unknown responder kind {kind!r}; valid kinds: {', '.join(RESPONDER_KINDS)}")


def _build(cls: type[Responder], kind: str, given: dict[str, Any], *args: Any) -> Responder:
    accepted = inspect.signature(cls.__init__).parameters
    unknown = set(given) - set(accepted)
    # The [responder] section carries every kind's keys; only a direct call can misspell one.
    known_elsewhere = set(_section_keys())
    typos = unknown - known_elsewhere
    if typos:
        raise ValueError(f"bad settings for responder {kind!r}: unexpected {', '.join(sorted(typos))}")
    try:
        return cls(*args, **{k: v for k, v in given.items() if k in accepted})
    except TypeError as exc:
        raise ValueError(f"bad settings for responder {kind!r}: {exc}") from None


def _section_keys() -> list[str]:
    from appliance.config import ResponderSettings

    return [*ResponderSettings.model_fields, "base_url"]
