"""Process gauges each service exports beside its own metrics, so a long run can show whether it
leaks: resident memory and open descriptors (prometheus_client's process collector), OS threads
(native engine threads included, which Python's own count misses) and the asyncio tasks alive on
the service's event loop."""

from __future__ import annotations

import asyncio
import weakref

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector


def os_threads() -> int:
    """Threads of this process as the kernel counts them (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_added: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def add_runtime_gauges(registry: CollectorRegistry, loop: asyncio.AbstractEventLoop) -> None:
    """``process_*`` (resident memory, open fds, CPU), ``appliance_process_threads`` and
    ``appliance_asyncio_tasks`` (read when scraped, from whichever thread serves the scrape)."""
    if registry in _added:  # a service started again (a retried start) keeps its first gauges
        return
    _added.add(registry)
    ProcessCollector(registry=registry)
    Gauge("appliance_process_threads", "OS threads of this process", registry=registry).set_function(
        os_threads
    )
    Gauge(
        "appliance_asyncio_tasks", "asyncio tasks not yet done on the service's event loop", registry=registry
    ).set_function(lambda: len(asyncio.all_tasks(loop)))
