"""The orchestrator's settings (``appliance orchestrator --config /etc/appliance/orchestrator.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from appliance.audio.vad_config import VadConfig
from appliance.config.access import AccessSettings
from appliance.config.base import _redis_scheme, _RedisSection, _Section, _ServiceSettings
from appliance.config.tls import WorkerLinkTlsSettings
from appliance.discovery import split_host_port


class AsrSettings(_Section):
    model: str = Field("tiny.en", description="tiny.en, base, or a path to a CTranslate2 Whisper model")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"
    beam_size: int = Field(1, ge=1, le=10)
    language: str | None = Field(None, description='for multilingual models: a code like "en", or "auto"')
    cpu_threads: int = Field(2, ge=1)
    short_window: bool = Field(
        True,
        description="encode an utterance under 14 s in a 10 or 15 s window instead of Whisper's 30 s "
        "(about 4x faster on a CPU, the same accuracy on commands; unreliable results get the 30 s pass)",
    )
    partial_interval_ms: int = Field(
        2000, ge=0, description="partial transcripts this often during long turns (0: off)"
    )
    models_dir: Path | None = Field(
        None,
        description="whisper-<model>/ installed by `appliance models fetch`, used before the packaged copy "
        "(absent: $APPLIANCE_MODELS_DIR, else /var/lib/appliance/models)",
    )


class VadSettings(VadConfig):
    """The VAD's parameters (one model: :class:`appliance.audio.vad_config.VadConfig`) and the echo estimate's."""

    echo_return_loss_db: float = Field(
        20.0,
        ge=0,
        le=60,
        description="how much quieter the appliance's own voice is assumed to be in the mic",
    )


class ResponderSettings(_Section):
    kind: Literal["echo", "openai", "embedded"] = "echo"
    url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8081/v1")
    model: str = Field(
        "local",
        description="openai: the model name sent; embedded: a models.lock id or a .gguf path "
        '("local": smollm2-135m-instruct)',
    )
    api_key: str | None = None
    system_prompt: str | None = None
    timeout_s: float = Field(20.0, gt=0)
    first_token_timeout_s: float = Field(8.0, gt=0)
    models_dir: Path | None = Field(
        None,
        description="embedded: where `appliance models fetch` installed the model, used before the packaged copy "
        "(absent: $APPLIANCE_MODELS_DIR, else /var/lib/appliance/models)",
    )
    context_tokens: int = Field(
        2048, ge=256, le=131072, description="embedded: context of one generation (prompt + reply)"
    )
    history_tokens: int = Field(
        0,
        ge=0,
        description="embedded: prompt budget (system prompt + history + question); 0: context_tokens - max_tokens",
    )
    max_tokens: int = Field(120, ge=8, le=4096, description="embedded: the longest reply, in tokens")
    temperature: float = Field(0.3, ge=0, le=2, description="embedded: sampling temperature")
    n_gpu_layers: int = Field(
        0, ge=-1, description="embedded: layers offloaded to the GPU (-1: all; 0: CPU only)"
    )
    threads: int = Field(
        0, ge=0, description="embedded: CPU threads for llama.cpp (0: half the cores, at least 1)"
    )
    parallel: int = Field(2, ge=1, le=64, description="embedded: replies generated at once (llama.cpp slots)")
    max_waiting: int = Field(
        2,
        ge=0,
        description="embedded: replies that may wait for a free slot; more are refused with responder_busy",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v or None

    @model_validator(mode="after")
    def _openai_needs_url(self) -> ResponderSettings:
        if self.kind == "openai" and not self.url:
            raise ValueError('kind "openai" needs url (e.g. "http://127.0.0.1:8081/v1")')
        return self


class SessionSettings(_Section):
    idle_timeout_s: float = Field(300.0, gt=0)
    max_duration_s: float = Field(3600.0, gt=0)
    max_turns: int = Field(200, ge=1)
    max_sessions: int = Field(16, ge=1)


class PlaybackSettings(_Section):
    lead_ms: int = Field(100, ge=20, le=1000, description="how far reply audio may run ahead of real time")
    barge_in_confirm_ms: int = Field(
        600, ge=100, description="PAUSEd reply resumes if no turn is confirmed in this long"
    )
    tts_model: str = Field("", description="model id for replies (empty: the worker's default)")
    tts_stall_ms: int = Field(
        1200, ge=200, description="a worker that sends no audio this long while it is due is failed over"
    )
    tts_retry_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="with no TTS worker available (mid-reply or for a new reply), keep trying this long (0: give up at once)",
    )


DEFAULT_BACKCHANNELS = (
    "mm-hm",
    "mhm",
    "mm",
    "hm",
    "hmm",
    "uh-huh",
    "uh huh",
    "yeah",
    "yes",
    "yep",
    "yup",
    "okay",
    "ok",
    "right",
    "sure",
    "i see",
    "got it",
    "alright",
    "all right",
    "cool",
    "nice",
)


# Words an English sentence seldom ends on: a transcript ending on one is a phrase going on.
DEFAULT_UNFINISHED_WORDS = (
    "a", "an", "the", "and", "or", "but", "so", "because", "if", "than", "that", "of", "to", "for",
    "with", "by", "at", "in", "on", "from", "into", "about", "like", "my", "your", "our", "their",
    "his", "her", "its", "this", "these", "those", "is", "are", "was", "were", "be", "am", "can",
    "could", "would", "should", "will", "um", "uh", "er",
)  # fmt: skip


class TurnSettings(_Section):
    mode: Literal["smart", "silence"] = Field(
        "smart",
        description="smart: the turn model decides at each pause; silence: [vad] endpoint_silence_ms only",
    )
    pause_ms: int = Field(
        120, ge=40, le=1000, description="smart mode: the pause at which the turn model is asked"
    )
    lookahead_ms: int = Field(
        60,
        ge=0,
        le=1000,
        description="smart mode: the turn model and the speculative transcript start after this much "
        "silence, so that their verdict is ready when the pause reaches pause_ms (0: at pause_ms)",
    )
    incomplete_timeout_ms: int = Field(
        1200, ge=100, le=5000, description="smart mode: silence that ends a turn the model called incomplete"
    )
    complete_above: float = Field(
        0.5,
        ge=0.05,
        le=0.99,
        description="smart mode: the turn model's probability above which a pause is the turn's end",
    )
    certain_above: float = Field(
        1.0,
        ge=0.05,
        le=1.0,
        description="smart mode: at or above this probability the turn ends without waiting for the "
        "transcript check (1.0: always wait)",
    )
    model_path: Path | None = Field(
        None, description="the smart-turn ONNX file (absent: the model store's copy)"
    )
    threads: int = Field(1, ge=1, description="CPU threads of the turn model")
    check_transcript: bool = Field(
        True,
        description="smart mode: a pause the model calls complete ends the turn only once the "
        "speculative transcript shows it does not stop on an unfinished phrase",
    )
    unfinished_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNFINISHED_WORDS),
        description="a transcript ending on one of these is a phrase going on",
    )
    backchannels: bool = Field(True, description="short listener words while speaking resume the reply")
    backchannel_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BACKCHANNELS), description="what counts as a backchannel"
    )
    backchannel_max_ms: int = Field(
        900, ge=100, le=3000, description="speech over a reply longer than this is an interruption"
    )


class WebRtcSettings(_Section):
    ice_servers: list[str] = Field(
        default_factory=list,
        description='STUN/TURN servers, e.g. "stun:host:3478" or "turn:user:pass@host:3478" (empty: LAN only)',
    )
    max_peers: int = Field(16, ge=1, description="WebRTC peer connections held at once (more get HTTP 503)")

    @field_validator("ice_servers")
    @classmethod
    def _ice_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            scheme, _, rest = url.partition(":")
            if scheme not in ("stun", "stuns", "turn", "turns") or not rest.rpartition("@")[2]:
                raise ValueError(f"{url!r} is not stun:HOST[:PORT] or turn:USER:PASS@HOST[:PORT]")
        return v


class LiveKitSettings(_Section):
    """LiveKit as a transport: the orchestrator joins one room per conversation as an agent."""

    enabled: bool = Field(False, description="serve POST /livekit/token and join the rooms it names")
    url: str = Field(
        "", description="livekit-server's signalling URL for the orchestrator, e.g. ws://127.0.0.1:7880"
    )
    public_url: str = Field(
        "", description="the URL the page connects to, e.g. wss://appliance.local/livekit (empty: url)"
    )
    api_key: str = Field("", description="the API key livekit-server knows (or APPLIANCE_LIVEKIT__API_KEY)")
    api_secret: SecretStr | None = Field(
        None, description="its secret (or APPLIANCE_LIVEKIT__API_SECRET); never logged"
    )
    api_secret_file: Path | None = Field(None, description="first line is the secret (instead of api_secret)")
    room_prefix: str = Field(
        "appliance-", pattern=r"^[A-Za-z0-9_.-]{0,32}$", description="rooms are named <prefix><random id>"
    )
    agent_name: str = Field(
        "appliance", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the agent's identity in each room"
    )
    token_ttl_s: int = Field(
        600, ge=10, le=86_400, description="how long a minted room token may be used to join"
    )
    join_timeout_s: float = Field(30.0, gt=0, description="the person must publish a microphone this soon")
    max_rooms: int = Field(16, ge=1, description="rooms served at once (more get HTTP 503)")

    @field_validator("url", "public_url")
    @classmethod
    def _ws_url(cls, v: str) -> str:
        if v and not v.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with ws://, wss://, http:// or https://")
        return v

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> LiveKitSettings:
        if self.enabled:
            missing = [k for k in ("url", "api_key") if not getattr(self, k)]
            if self.api_secret is None and self.api_secret_file is None:
                missing.append("api_secret (or api_secret_file)")
            if missing:
                raise ValueError(f"enabled = true needs {', '.join(missing)}")
        return self

    def secret(self) -> str:
        """The API secret, from the setting or the first line of its file."""
        if self.api_secret is not None:
            return self.api_secret.get_secret_value()
        if self.api_secret_file is None:
            raise ValueError("[livekit] has no api_secret or api_secret_file")
        lines = self.api_secret_file.read_text().splitlines()
        return lines[0].strip() if lines else ""


class ApiSettings(_Section):
    """The OpenAI-compatible HTTP API under /v1 (docs/interop.md)."""

    enabled: bool = True
    keys_sha256: list[str] = Field(
        default_factory=list,
        description="Bearer API keys, as sha256 hex digests (`appliance api-key new` makes one); empty: none",
    )
    loopback_without_key: bool = Field(
        False,
        description="requests from 127.0.0.1/::1 with no X-Forwarded-For need no key (never through Caddy)",
    )
    max_input_chars: int = Field(4096, ge=1, description="longest /v1/audio/speech input")
    max_upload_mb: float = Field(25.0, gt=0, description="largest /v1/audio/transcriptions file")

    @field_validator("keys_sha256")
    @classmethod
    def _hex_digests(cls, v: list[str]) -> list[str]:
        for key in v:
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
                raise ValueError(
                    "each key must be a sha256 hex digest (64 lowercase hex digits), not the key"
                )
        return v


class WyomingSettings(_Section):
    """`appliance wyoming`: the Wyoming protocol server for Home Assistant (docs/interop.md)."""

    uri: str = Field("tcp://127.0.0.1:10200", description="where it listens: tcp://HOST:PORT or unix://PATH")
    zeroconf: bool = Field(
        False, description="advertise _wyoming._tcp over mDNS so Home Assistant discovers it"
    )
    zeroconf_name: str = Field("", description="the advertised instance name (empty: appliance-<hostname>)")
    zeroconf_host: str = Field(
        "", description="the address advertised (empty: the one routed to the mDNS group)"
    )
    tts_sample_rate: int = Field(
        0,
        ge=0,
        le=48_000,
        description="TTS audio rate sent to clients (0: the workers' 48 kHz frames)",
    )
    max_clients: int = Field(16, ge=1, description="connections served at once (more get an error event)")
    max_audio_s: float = Field(60.0, gt=0, description="longest audio one transcribe request may send")

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("tcp://", "unix://")):
            raise ValueError("must be tcp://HOST:PORT or unix://PATH")
        return v


ROUTING_FLAGS = ("streaming", "zero_shot", "lora", "cpu_ok", "emotive_zero_prompt")


class OrchestratorDiscoverySettings(_RedisSection):
    resync_s: float = Field(
        10.0, gt=0, description="full re-read of the worker keys this often (pub/sub may drop)"
    )
    health_check_s: float = Field(
        2.0, gt=0, description="gRPC probes of down and static-only workers (of all, while Redis is down)"
    )
    language: str = Field("", description='language replies need, e.g. "en" (empty: any)')
    require: list[str] = Field(
        default_factory=lambda: ["streaming"], description=f"of {', '.join(ROUTING_FLAGS)}"
    )

    @field_validator("require")
    @classmethod
    def _known_flags(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if f not in ROUTING_FLAGS]
        if bad:
            raise ValueError(f"unknown capability {', '.join(bad)}; known: {', '.join(ROUTING_FLAGS)}")
        return v


class OrchestratorSettings(_ServiceSettings):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:7001"], description="static TTS worker list"
    )
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    discovery: OrchestratorDiscoverySettings = Field(default_factory=OrchestratorDiscoverySettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    asr: AsrSettings = Field(default_factory=AsrSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    responder: ResponderSettings = Field(default_factory=ResponderSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    playback: PlaybackSettings = Field(default_factory=PlaybackSettings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    webrtc: WebRtcSettings = Field(default_factory=WebRtcSettings)
    livekit: LiveKitSettings = Field(default_factory=LiveKitSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    tls: WorkerLinkTlsSettings = Field(default_factory=WorkerLinkTlsSettings)

    _empty_redis_is_none = field_validator("redis_url")(lambda v: v or None)
    _redis_url_scheme = field_validator("redis_url")(_redis_scheme)

    def listed_workers(self) -> list[str]:
        """The static worker list as the operator gave it (file, env or flag); empty when only the built-in
        default is there, which is for running without Redis and is not used alongside it."""
        return list(self.workers) if "workers" in self.model_fields_set else []

    @field_validator("workers")
    @classmethod
    def _host_port(cls, v: list[str]) -> list[str]:
        for w in v:
            split_host_port(w)
        return v
