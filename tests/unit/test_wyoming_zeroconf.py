"""The _wyoming._tcp advertisement, resolved by a real zeroconf browser on loopback."""

from __future__ import annotations

import pytest

pytest.importorskip("zeroconf")

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from appliance.interop.zeroconf import SERVICE_TYPE, Advertiser


async def test_the_advertised_service_resolves_to_its_port():
    advertiser = Advertiser(10299, name="appliance-test", host="127.0.0.1", interfaces=["127.0.0.1"])
    await advertiser.start()
    browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, f"appliance-test.{SERVICE_TYPE}")
        assert await info.async_request(browser.zeroconf, 5000)
        assert info.port == 10299 and info.parsed_addresses() == ["127.0.0.1"]
    finally:
        await browser.async_close()
        await advertiser.stop()
