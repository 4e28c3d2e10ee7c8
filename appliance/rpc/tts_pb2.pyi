from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ControlCommand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_COMMAND_UNSPECIFIED: _ClassVar[ControlCommand]
    PAUSE: _ClassVar[ControlCommand]
    RESUME: _ClassVar[ControlCommand]
    STOP: _ClassVar[ControlCommand]
    RELOAD: _ClassVar[ControlCommand]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    AVAILABLE: _ClassVar[ModelState]
    LOADING: _ClassVar[ModelState]
    RESIDENT: _ClassVar[ModelState]
    UNLOADING: _ClassVar[ModelState]
    FAILED: _ClassVar[ModelState]
CONTROL_COMMAND_UNSPECIFIED: ControlCommand
PAUSE: ControlCommand
RESUME: ControlCommand
STOP: ControlCommand
RELOAD: ControlCommand
MODEL_STATE_UNSPECIFIED: ModelState
AVAILABLE: ModelState
LOADING: ModelState
RESIDENT: ModelState
UNLOADING: ModelState
FAILED: ModelState

class StartSessionRequest(_message.Message):
    __slots__ = ("session_id", "model_id", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_id: str
    options: _containers.ScalarMap[str, str]
    def __init__(self, session_id: _Optional[str] = ..., model_id: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartSessionResponse(_message.Message):
    __slots__ = ("success", "message", "model_id", "sample_rate", "frame_duration_ms")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    model_id: str
    sample_rate: int
    frame_duration_ms: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., model_id: _Optional[str] = ..., sample_rate: _Optional[int] = ..., frame_duration_ms: _Optional[int] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("session_id", "text", "is_final", "sequence_number")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    is_final: bool
    sequence_number: int
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ..., is_final: _Optional[bool] = ..., sequence_number: _Optional[int] = ...) -> None: ...

class AudioFrame(_message.Message):
    __slots__ = ("session_id", "audio_data", "sample_rate", "frame_duration_ms", "sequence_number", "is_final", "text_offset")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    audio_data: bytes
    sample_rate: int
    frame_duration_ms: int
    sequence_number: int
    is_final: bool
    text_offset: int
    def __init__(self, session_id: _Optional[str] = ..., audio_data: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., frame_duration_ms: _Optional[int] = ..., sequence_number: _Optional[int] = ..., is_final: _Optional[bool] = ..., text_offset: _Optional[int] = ...) -> None: ...

class ControlRequest(_message.Message):
    __slots__ = ("session_id", "command")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    command: ControlCommand
    def __init__(self, session_id: _Optional[str] = ..., command: _Optional[_Union[ControlCommand, str]] = ...) -> None: ...

class ControlResponse(_message.Message):
    __slots__ = ("success", "message", "timestamp_ms")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    timestamp_ms: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "engine", "state", "native_sample_rate", "language", "refcount", "idle_s", "load_ms", "is_default", "resident_bytes", "device")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    REFCOUNT_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    engine: str
    state: ModelState
    native_sample_rate: int
    language: str
    refcount: int
    idle_s: float
    load_ms: float
    is_default: bool
    resident_bytes: int
    device: str
    def __init__(self, model_id: _Optional[str] = ..., engine: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., native_sample_rate: _Optional[int] = ..., language: _Optional[str] = ..., refcount: _Optional[int] = ..., idle_s: _Optional[float] = ..., load_ms: _Optional[float] = ..., is_default: _Optional[bool] = ..., resident_bytes: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("success", "message", "load_ms")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    load_ms: float
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., load_ms: _Optional[float] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("worker_name", "engines", "resident_models", "available_models", "output_sample_rates", "frame_duration_ms", "streaming", "gpu", "max_sessions", "active_sessions", "languages", "default_model", "engine_jobs")
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    RESIDENT_MODELS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MODELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATES_FIELD_NUMBER: _ClassVar[int]
    FRAME_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_JOBS_FIELD_NUMBER: _ClassVar[int]
    worker_name: str
    engines: _containers.RepeatedScalarFieldContainer[str]
    resident_models: _containers.RepeatedScalarFieldContainer[str]
    available_models: _containers.RepeatedScalarFieldContainer[str]
    output_sample_rates: _containers.RepeatedScalarFieldContainer[int]
    frame_duration_ms: int
    streaming: bool
    gpu: bool
    max_sessions: int
    active_sessions: int
    languages: _containers.RepeatedScalarFieldContainer[str]
    default_model: str
    engine_jobs: int
    def __init__(self, worker_name: _Optional[str] = ..., engines: _Optional[_Iterable[str]] = ..., resident_models: _Optional[_Iterable[str]] = ..., available_models: _Optional[_Iterable[str]] = ..., output_sample_rates: _Optional[_Iterable[int]] = ..., frame_duration_ms: _Optional[int] = ..., streaming: _Optional[bool] = ..., gpu: _Optional[bool] = ..., max_sessions: _Optional[int] = ..., active_sessions: _Optional[int] = ..., languages: _Optional[_Iterable[str]] = ..., default_model: _Optional[str] = ..., engine_jobs: _Optional[int] = ...) -> None: ...
