"""An asyncio client for a TTS worker (used by `appliance say`, the benchmarks, the tests and the
orchestrator's worker link)."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.rpc import tts_pb2 as pb
from appliance.rpc import tts_pb2_grpc


class Control(enum.IntEnum):
    """A session's control commands; each value is the protobuf ``ControlCommand`` it sends."""

    PAUSE = pb.PAUSE
    RESUME = pb.RESUME
    STOP = pb.STOP
    RELOAD = pb.RELOAD


@dataclass
class ReceivedFrame:
    audio: bytes
    sequence_number: int
    is_final: bool
    received_at: float  # loop.time()


class TTSClient:
    def __init__(
        self,
        address: str,
        options: Iterable[tuple[str, int | str]] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: TLS (``appliance.rpc.tls.channel_credentials``); None: plaintext."""
        self.address = address
        self.tls = credentials is not None
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=list(options))
        else:
            self.channel = grpc.aio.secure_channel(address, credentials, options=list(options))
        self.stub = tts_pb2_grpc.TTSServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the worker's health service says SERVING (its default model is loaded)."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = "not serving yet"
        while True:
            try:
                reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"TTS worker at {self.address} not ready after {timeout:.0f}s ({last})")
            await asyncio.sleep(0.1)

    async def start_session(
        self, session_id: str, model_id: str = "", options: dict[str, str] | None = None
    ) -> pb.StartSessionResponse:
        return await self.stub.StartSession(
            pb.StartSessionRequest(session_id=session_id, model_id=model_id, options=options or {})
        )

    async def end_session(self, session_id: str) -> pb.EndSessionResponse:
        return await self.stub.EndSession(pb.EndSessionRequest(session_id=session_id))

    async def control(self, session_id: str, command: Control | int) -> pb.ControlResponse:
        """Send ``command`` (any protobuf value is passed on as is, for testing the worker's checks)."""
        return await self.stub.Control(pb.ControlRequest(session_id=session_id, command=int(command)))

    def synthesize(self, session_id: str, texts: Iterable[str] | AsyncIterator[str]):
        """Open a Synthesize stream; returns the call (iterate it for AudioFrames, or cancel it)."""

        async def chunks():
            seq = itertools.count()
            if hasattr(texts, "__aiter__"):
                async for text in texts:
                    yield pb.TextChunk(session_id=session_id, text=text, sequence_number=next(seq))
            else:
                for text in texts:
                    yield pb.TextChunk(session_id=session_id, text=text, sequence_number=next(seq))
            yield pb.TextChunk(session_id=session_id, text="", is_final=True, sequence_number=next(seq))

        return self.stub.Synthesize(chunks())

    async def synthesize_all(self, session_id: str, text: str) -> tuple[bytes, list[pb.AudioFrame]]:
        """Synthesise one utterance; return its PCM (48 kHz s16le mono) and the frames as received."""
        frames = [frame async for frame in self.synthesize(session_id, [text])]
        return b"".join(f.audio_data for f in frames), frames

    async def list_models(self) -> pb.ListModelsResponse:
        return await self.stub.ListModels(pb.ListModelsRequest())

    async def load_model(self, model_id: str, timeout: float | None = None) -> pb.LoadModelResponse:
        return await self.stub.LoadModel(pb.LoadModelRequest(model_id=model_id), timeout=timeout)

    async def unload_model(self, model_id: str) -> pb.UnloadModelResponse:
        return await self.stub.UnloadModel(pb.UnloadModelRequest(model_id=model_id))

    async def capabilities(self) -> pb.GetCapabilitiesResponse:
        return await self.stub.GetCapabilities(pb.GetCapabilitiesRequest())
