"""Caddy in front of the orchestrator: TLS with the internal CA, security headers, the WebSocket
upgrade, the root certificate and its instructions."""

from __future__ import annotations

import ssl

import pytest

from appliance.transport.ws_client import WsClient

pytestmark = pytest.mark.e2e


def test_https_headers_and_health(caddy):
    status, body, headers = caddy.get("/healthz")
    assert status == 200 and b'"status": "ok"' in body
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "microphone=(self)" in headers["Permissions-Policy"]
    assert "Server" not in headers


def test_root_certificate_and_instructions(caddy):
    status, cert, _headers = caddy.get("/ca.crt")
    assert status == 200 and b"BEGIN CERTIFICATE" in cert
    status, page, _ = caddy.get("/trust")
    assert status == 200 and b"/ca.crt" in page and b"Android" in page and b"Windows" in page
    # The served root really is the CA that signed the site's certificate.
    ctx = ssl.create_default_context(cadata=cert.decode())
    import urllib.request

    with urllib.request.urlopen(caddy.url + "/healthz", context=ctx, timeout=5) as r:
        assert r.status == 200


def test_plain_http_redirects_to_https(caddy):
    import http.client

    conn = http.client.HTTPConnection("localhost", caddy.http_port, timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status in (301, 302, 307, 308)
    assert response.getheader("Location").startswith("https://")


async def test_websocket_upgrade_through_caddy(caddy):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = WsClient(caddy.url.replace("https", "wss") + "/ws", ssl=ctx)
    await client.connect(16000, token=caddy.secret)  # through the proxy the access secret is needed
    await client.send_json({"type": "text", "text": "through the proxy"})
    await client.wait_for(lambda: client.rx.of_type("reply_end"), 30)
    assert client.rx.frames and all(len(f) == 1920 for _, f in client.rx.frames)
    await client.close()


async def test_through_caddy_a_client_without_access_is_refused(caddy):
    import json

    import aiohttp

    from appliance.transport.protocol import CloseCode

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(caddy.url.replace("https", "wss") + "/ws", ssl=False) as ws:
            await ws.send_str(json.dumps({"type": "hello", "sample_rate": 16000}))
            event = json.loads((await ws.receive()).data)
            await ws.receive()
            assert event["code"] == "access_required" and ws.close_code == CloseCode.ACCESS_DENIED
        async with http.get(caddy.url + "/", ssl=False, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/trust"
        async with http.get(caddy.url + "/metrics", ssl=False) as r:
            assert r.status == 401
        async with http.post(caddy.url + "/trust/pair", json={"secret": caddy.secret}, ssl=False) as r:
            assert r.status == 200
            cookie = r.cookies["appliance_access"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"  # over TLS
