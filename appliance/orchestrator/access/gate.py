"""The decisions: does this request need access, has it got it, is its Origin ours, is it over a
rate limit. Every front end (the page, /ws, WebRTC offers, /v1, /metrics) asks the same gate."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from aiohttp import web

from appliance.config import ConfigError, OrchestratorSettings
from appliance.orchestrator.access.addresses import (
    client_address,
    is_local,
    is_loopback,
    origin_host,
    own_names,
)
from appliance.orchestrator.access.limits import RateLimit
from appliance.orchestrator.access.secret import SecretStore, default_secret_file
from appliance.transport.protocol import CloseCode

log = logging.getLogger(__name__)

COOKIE_NAME = "appliance_access"
NAMES_REFRESH_S = 30.0  # an unknown Origin looks the appliance's own names up again at most this often


@dataclass(frozen=True)
class Refusal:
    status: int  # HTTP
    close_code: int  # WebSocket
    code: str
    message: str
    retry_after_s: int = 0

    def body(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.retry_after_s:
            error["retry_after_s"] = self.retry_after_s
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers())


def _too_many(what: str, wait: float) -> Refusal:
    seconds = math.ceil(wait)
    return Refusal(
        429, CloseCode.RATE_LIMITED, "rate_limited", f"too many {what}; retry in {seconds} s", seconds
    )


class AccessGate:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings.access
        self.listen_host = settings.host
        self.store = SecretStore(self.settings.secret_file or default_secret_file())
        self.failures = RateLimit(self.settings.failed_attempts_per_minute)
        self.starts = RateLimit(self.settings.session_starts_per_minute)
        self._extra_hosts = [origin_host(o) for o in self.settings.allowed_origins]
        self.names = own_names(self._extra_hosts)
        self._names_at = time.monotonic()
        self.max_age_s = self.settings.cookie_max_age_days * 86400

    @property
    def off(self) -> bool:
        return self.settings.enabled is False

    def announce(self) -> None:
        """Say at every start how access is controlled (and warn when it is off beyond loopback)."""
        if self.off:
            if not is_loopback(self.listen_host):
                log.warning(
                    "access control is OFF ([access] enabled = false) while listening on %s: anyone who "
                    "can reach this address can talk to the appliance and use its language model",
                    self.listen_host,
                )
            return
        if self.settings.enabled is True or not is_loopback(self.listen_host):
            created = not self.store.path.exists()
            try:
                self.store.get()
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"[access] secret_file {self.store.path}: {exc} (`appliance access rotate` as a user "
                    "who may write there makes one)"
                ) from None
            log.info(
                "access control on: clients need the access secret in %s%s (`appliance access show`)",
                self.store.path,
                " (created now)" if created else "",
            )
        else:
            log.info(
                "access control: open to this machine on %s; clients through a proxy need the secret in %s",
                self.listen_host,
                self.store.path,
            )

    def required(self, request: web.Request) -> bool:
        if self.off:
            return False
        return self.settings.enabled is True or not is_local(request.remote, request.headers)

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers)

    def origin_refusal(self, request: web.Request) -> Refusal | None:
        origin = request.headers.get("Origin")
        if (
            self.off or origin is None
        ):  # browsers always send it for WebSocket and POST; other clients need not
            return None
        host = origin_host(origin)
        if host not in self.names and time.monotonic() - self._names_at > NAMES_REFRESH_S:
            self.names = own_names(self._extra_hosts)  # a new DHCP lease, a renamed host
            self._names_at = time.monotonic()
        if host in self.names:
            return None
        log.warning("refused Origin %s from %s on %s", origin, self.client(request), request.path)
        return Refusal(
            403,
            CloseCode.ORIGIN_REFUSED,
            "origin_refused",
            f"the Origin {origin} is not one of this appliance's names",
        )

    def secret_matches(self, candidate: str | None) -> bool:
        return self.store.matches(candidate)

    def has_cookie(self, request: web.Request) -> bool:
        return self.store.cookie_valid(request.cookies.get(COOKIE_NAME), self.max_age_s)

    def bearer(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    def lockout(self, request: web.Request) -> Refusal | None:
        wait = self.failures.retry_after(self.client(request))
        return _too_many("failed access attempts", wait) if wait else None

    def denied(self, request: web.Request, presented: bool) -> Refusal:
        """A refusal for missing or wrong access; a wrong secret counts towards the lockout."""
        client = self.client(request)
        if presented:
            self.failures.record(client)
            log.warning("wrong access secret from %s on %s", client, request.path)
            return Refusal(401, CloseCode.ACCESS_DENIED, "access_denied", "the access secret is wrong")
        return Refusal(
            401,
            CloseCode.ACCESS_DENIED,
            "access_required",
            "the access secret is needed: pair at /trust, or send it as hello's token or a Bearer header",
        )

    def check(self, request: web.Request, token: str | None = None) -> Refusal | None:
        """Origin, lockout and access, in that order; None when the request may go on."""
        refusal = self.origin_refusal(request) or self.lockout(request)
        if refusal or not self.required(request):
            return refusal
        if self.has_cookie(request):
            return None
        candidate = token or self.bearer(request)
        if self.secret_matches(candidate):
            return None
        return self.denied(request, presented=candidate is not None)

    def session_start(self, request: web.Request) -> Refusal | None:
        wait = self.starts.take(self.client(request))
        return _too_many("sessions started", wait) if wait else None
