"""/trust: how to trust the appliance's certificate, and pairing — the access secret typed once (or
carried by a pairing link) buys this browser a session cookie. A paired device sees the pairing link
as a QR code, to pair the next phone by pointing its camera at the screen."""

from __future__ import annotations

import html
import io
import logging
from pathlib import Path
from urllib.parse import parse_qs

import segno
from aiohttp import web

from appliance.orchestrator.access.addresses import came_over_tls, is_loopback, lan_addresses
from appliance.orchestrator.access.gate import COOKIE_NAME, AccessGate

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 4096

FORM = """<section data-testid="pairing">
<h2>Pair this device</h2>
<p>This appliance lets in only devices that know its <em>access secret</em>. On the appliance,
<code>appliance access show</code> prints it (with the pairing link); on a device that is already
paired, this page shows the pairing link as a QR code to scan. Enter the secret once: this browser
then keeps a cookie that lets it in.</p>
{error}
<form method="post" action="/trust/pair" data-testid="pair-form">
<label>Access secret <input name="secret" autocomplete="off" autocapitalize="none" spellcheck="false"
 placeholder="abcd-efgh-ijkl-mnop-qrst"></label> <button type="submit">Pair</button>
</form>
</section>"""

PAIRED = """<section data-testid="pairing">
<h2>Pairing</h2>
<p data-testid="paired">{state}</p>
<p>To pair another phone or laptop, scan this code with it (or open the link on it). Anyone with
the link can use the appliance: share it only with your household. <code>appliance access rotate</code>
makes a new secret and unpairs every device.</p>
<div class="qr" data-testid="pair-qr">{qr}</div>
<p><a href="{link}" data-testid="pair-link">{shown}</a></p>
</section>"""

OPEN = """<section data-testid="pairing">
<h2>Pairing</h2>
<p data-testid="paired">Access control is off ([access] enabled = false): every device that reaches
this appliance can use it.</p>
</section>"""


def pairing_link(request: web.Request, secret: str) -> str:
    host = request.host
    if is_loopback(host.rpartition(":")[0] if host.count(":") == 1 else host):
        ipv4 = sorted(a for a in lan_addresses() if "." in a and not a.startswith("127."))
        host = ipv4[0] if ipv4 else host  # a phone cannot reach "localhost"
    scheme = "https" if came_over_tls(request) else "http"
    return f"{scheme}://{host}/trust#secret={secret}"


def qr_svg(text: str) -> str:
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=4, xmldecl=False, svgns=True, border=2)
    return out.getvalue().decode()


class TrustPage:
    def __init__(self, gate: AccessGate, web_dir: Path) -> None:
        self.gate = gate
        self.template = web_dir / "trust.html"

    def register(self, app: web.Application) -> None:
        app.router.add_get("/trust", self.page)
        app.router.add_post("/trust/pair", self.pair)

    def _render(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        gate = self.gate
        if gate.off:
            section = OPEN
        elif not gate.required(request) or gate.has_cookie(request):
            state = "This device is paired." if gate.has_cookie(request) else "This is the appliance itself."
            link = pairing_link(request, gate.store.get())
            shown = html.escape(link)
            section = PAIRED.format(state=state, qr=qr_svg(link), link=shown, shown=shown)
        else:
            note = f'<p class="error" data-testid="pair-error">{html.escape(error)}</p>' if error else ""
            section = FORM.format(error=note)
        body = self.template.read_text().replace("<!-- pairing -->", section)
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        return web.Response(text=body, content_type="text/html", status=status, headers=headers)

    async def page(self, request: web.Request) -> web.Response:
        return self._render(request)

    async def pair(self, request: web.Request) -> web.StreamResponse:
        """The secret from the form (or JSON ``{"secret": …}``) → the cookie, then back to the page."""
        as_json = request.content_type == "application/json"
        # No Origin check here: under Referrer-Policy: no-referrer a browser's form posts say
        # "Origin: null", and pairing from elsewhere gains nothing (it needs the secret itself).
        refusal = self.gate.lockout(request)
        if refusal is None:
            raw = await request.content.read(MAX_FORM_BYTES + 1)
            secret = _secret_from(raw, as_json)
            if self.gate.off or self.gate.secret_matches(secret):
                response = (
                    web.json_response({"paired": True})
                    if as_json
                    else web.Response(status=303, headers={"Location": "/"})
                )
                self.set_cookie(request, response)
                log.info("paired a device from %s", self.gate.client(request))
                return response
            refusal = self.gate.denied(request, presented=bool(secret))
        if as_json:
            return refusal.response()
        response = self._render(request, refusal.message, refusal.status)
        response.headers.update(refusal.headers())
        return response

    def set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            COOKIE_NAME,
            self.gate.store.cookie(),
            max_age=self.gate.max_age_s,
            path="/",
            httponly=True,
            secure=came_over_tls(request),
            samesite="Strict",
        )


def _secret_from(raw: bytes, as_json: bool) -> str | None:
    if len(raw) > MAX_FORM_BYTES:
        return None
    text = raw.decode("utf-8", "replace")
    if as_json:
        import json

        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return None
        value = obj.get("secret") if isinstance(obj, dict) else None
        return value if isinstance(value, str) else None
    values = parse_qs(text).get("secret")
    return values[0] if values else None
