"""The TTS worker tier as the orchestrator sees it: which worker serves a session (a pool: the
static list, or Redis discovery with the routing policy), and the session and its reply streams
on that worker, with failover."""

from appliance.orchestrator.workers.link import TtsLink
from appliance.orchestrator.workers.pool import TtsUnavailable, WorkerPool
from appliance.orchestrator.workers.reply_stream import ReplyStream
from appliance.orchestrator.workers.routed_pool import RoutedPool, make_pool
from appliance.orchestrator.workers.static_pool import StaticPool

__all__ = ["ReplyStream", "RoutedPool", "StaticPool", "TtsLink", "TtsUnavailable", "WorkerPool", "make_pool"]
