"""The ``_wyoming._tcp`` mDNS advertisement Home Assistant discovers Wyoming services by.

Needs the optional ``zeroconf`` package (``pip install 'appliance[zeroconf]'``); off unless
``[wyoming] zeroconf = true``."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def default_host() -> str:
    """The address the host would send mDNS from (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((MDNS_GROUP, 5353))
        return s.getsockname()[0]


class Advertiser:
    def __init__(
        self, port: int, name: str = "", host: str = "", interfaces: list[str] | None = None
    ) -> None:
        try:
            from zeroconf import IPVersion
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
        except ImportError:
            raise RuntimeError(
                "[wyoming] zeroconf = true needs the zeroconf package: pip install 'appliance[zeroconf]'"
            ) from None
        self.port = port
        self.name = name or f"appliance-{socket.gethostname()}"
        self.host = host or default_host()
        self._zc = AsyncZeroconf(interfaces=interfaces or [self.host], ip_version=IPVersion.V4Only)
        self.info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{self.name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(self.host)],
            port=port,
            server=f"{socket.gethostname()}.local.",
        )

    async def start(self) -> None:
        await self._zc.async_register_service(self.info)
        log.info("advertising %s on %s:%d over mDNS", self.info.name, self.host, self.port)

    async def stop(self) -> None:
        await self._zc.async_unregister_service(self.info)
        await self._zc.async_close()
