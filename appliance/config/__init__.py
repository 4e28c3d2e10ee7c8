"""Service configuration: one TOML file per service, overridden by APPLIANCE_* environment
variables, overridden in turn by command-line flags.

Nested keys use a double underscore in the environment: ``APPLIANCE_MODELS__TTL_S=300``.
Unknown keys are errors, so a typo in a file is named instead of silently ignored.
"""

from appliance.config.access import AccessSettings
from appliance.config.base import ConfigError
from appliance.config.loading import SERVICE_KINDS, guess_kind, load_settings
from appliance.config.orchestrator import (
    DEFAULT_BACKCHANNELS,
    ROUTING_FLAGS,
    ApiSettings,
    AsrSettings,
    LiveKitSettings,
    OrchestratorDiscoverySettings,
    OrchestratorSettings,
    PlaybackSettings,
    ResponderSettings,
    SessionSettings,
    TurnSettings,
    VadSettings,
    WebRtcSettings,
    WyomingSettings,
)
from appliance.config.tls import WorkerLinkTlsSettings, WorkerTlsSettings
from appliance.config.worker import (
    AudioSettings,
    ModelsSettings,
    WatchdogSettings,
    WorkerDiscoverySettings,
    WorkerSettings,
)

__all__ = [
    "DEFAULT_BACKCHANNELS",
    "ROUTING_FLAGS",
    "SERVICE_KINDS",
    "AccessSettings",
    "ApiSettings",
    "AsrSettings",
    "AudioSettings",
    "ConfigError",
    "LiveKitSettings",
    "ModelsSettings",
    "OrchestratorDiscoverySettings",
    "OrchestratorSettings",
    "PlaybackSettings",
    "ResponderSettings",
    "SessionSettings",
    "TurnSettings",
    "VadSettings",
    "WatchdogSettings",
    "WebRtcSettings",
    "WorkerDiscoverySettings",
    "WorkerLinkTlsSettings",
    "WorkerSettings",
    "WorkerTlsSettings",
    "WyomingSettings",
    "guess_kind",
    "load_settings",
]
