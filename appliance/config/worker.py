"""The TTS worker's settings (``appliance tts-worker --config /etc/appliance/tts/NAME.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from appliance.config.base import _host_port_or_none, _redis_scheme, _RedisSection, _Section, _ServiceSettings
from appliance.config.tls import WorkerTlsSettings


class VoicePrompt(_Section):
    """A reference clip and what it says: a zero-shot speaker for engines that take one."""

    audio: Path = Field(description="a WAV file (16-bit PCM, mono or stereo, any rate)")
    text: str = Field("", description="the words spoken in it (CSM needs them; XTTS does not)")


class LocalModel(_Section):
    """A checkpoint in a directory of the operator's (one they downloaded), served under its own id."""

    engine: Literal["csm", "xtts"] = Field(description="the engine that loads it")
    path: Path = Field(description="the directory `save_pretrained` wrote (config.json, weights, processor)")
    language: str = Field("en-US", description="the language it speaks, for routing")
    sample_rate: int = Field(24000, gt=0, description="its codec's rate (checked when it loads)")
    loras: dict[str, Path] = Field(
        default_factory=dict,
        description="LoRA voice name -> adapter directory (peft's save_pretrained), loaded with the "
        "model; a session picks one with the StartSession option `lora`",
    )
    accept_licence: str = Field(
        "", description='the licence of weights that ask for it to be accepted (XTTS v2: "CPML")'
    )
    voice_prompts: dict[str, VoicePrompt] = Field(
        default_factory=dict,
        description="zero-shot speaker name -> {audio, text}, read once with the model; a session "
        "picks one with the StartSession option `voice_prompt`",
    )


class ModelsSettings(_Section):
    default: str = "piper-en_US-joe-medium"
    preload: list[str] = Field(default_factory=list, description="loaded at start besides the default")
    serve: list[str] = Field(
        default_factory=list,
        description="optional models (hibari-*, kokoro-ja-*) served on demand besides the default and preload",
    )
    resident_cap: int = Field(2, ge=1)
    ttl_s: float = Field(600.0, gt=0, description="idle models are evicted after this long")
    min_residency_s: float = Field(60.0, ge=0, description="a model stays at least this long after loading")
    max_parallel_loads: int = Field(1, ge=1)
    warmup: bool = True
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    devices: dict[str, Literal["auto", "cpu", "cuda", "tensorrt"]] = Field(
        default_factory=dict, description="model id -> device, for models that differ from `device`"
    )
    onnx_threads: int = Field(
        0,
        ge=0,
        description="intra-op threads per ONNX call (0: all cores when alone, one each when calls overlap)",
    )
    ram_budget_mb: float = Field(
        0.0,
        ge=0,
        description="process memory the resident models may take (0: no budget); idle models are "
        "evicted least recently used first to stay under it",
    )
    vram_budget_mb: float = Field(
        0.0, ge=0, description="GPU memory the resident CUDA models may take (0: no budget)"
    )
    models_dir: Path | None = Field(
        None,
        description="DIR/<model-id>/ installed by `appliance models fetch`, used before the packaged copy "
        "(absent: $APPLIANCE_MODELS_DIR, else /var/lib/appliance/models)",
    )
    local: dict[str, LocalModel] = Field(
        default_factory=dict,
        description="model id -> a checkpoint in a directory of your own (engine, path, language); "
        "served like the optional models (name it in default, preload or serve)",
    )


class WatchdogSettings(_Section):
    stuck_synthesis_s: float = Field(
        15.0, gt=0, description="a synthesis call longer than this stops the pings"
    )


class AudioSettings(_Section):
    normalize: bool = True
    target_lufs: float = Field(-16.0, ge=-40, le=-6)
    limiter_ceiling_dbfs: float = Field(-1.0, ge=-12, le=0)


class WorkerDiscoverySettings(_RedisSection):
    heartbeat_s: float = Field(10.0, gt=0, description="the record is rewritten this often")
    ttl_s: float = Field(30.0, gt=0, description="the record expires this long after the last heartbeat")
    advertise_address: str | None = Field(
        None, description="HOST:PORT the orchestrator dials (absent: host:port)"
    )
    languages: list[str] = Field(
        default_factory=list, description="advertised (empty: those of the models it serves)"
    )

    _addr = field_validator("advertise_address")(_host_port_or_none)

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> WorkerDiscoverySettings:
        if self.ttl_s <= self.heartbeat_s:
            raise ValueError(f"ttl_s ({self.ttl_s}) must be longer than heartbeat_s ({self.heartbeat_s})")
        return self


class WorkerSettings(_ServiceSettings):
    name: str = Field("piper", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str = "127.0.0.1"
    port: int = Field(7001, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9101, ge=0, le=65535, description="absent: no metrics endpoint")
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    discovery: WorkerDiscoverySettings = Field(default_factory=WorkerDiscoverySettings)
    max_sessions: int = Field(64, ge=1)
    synthesis_threads: int | None = Field(None, ge=1, description="engine threads (absent: one per CPU core)")
    max_text_chars: int = Field(20_000, ge=1, description="per Synthesize stream")
    shutdown_grace_s: float = Field(5.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    tls: WorkerTlsSettings = Field(default_factory=WorkerTlsSettings)

    _empty_redis_is_none = field_validator("redis_url")(lambda v: v or None)
    _redis_url_scheme = field_validator("redis_url")(_redis_scheme)
