"""The ``appliance bench …`` benchmarks: each runs real processes and prints one JSON document.

- :mod:`.tts` — a worker's time to first audio and real-time factor under concurrency;
- :mod:`.conversation` — voice-to-voice latency and barge-in over the real WebSocket;
- :mod:`.routing` — routing decisions and worker registration with Redis discovery;
- :mod:`.failover` — the gap when the worker serving a reply dies or hangs.

Each module's ``run_bench`` is what its command calls.
"""

__all__: list[str] = []
