"""The gRPC servicer: the TTS worker ABI (proto/appliance/tts/v1/tts.proto) on top of the model manager and the sessions.

Every failure is a gRPC status with a message that says what to do; nothing here may crash the
worker or leave a model lease behind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from appliance.audio import FRAME_MS, OUTPUT_RATE
from appliance.config import WorkerSettings
from appliance.rpc import tts_pb2 as pb
from appliance.rpc import tts_pb2_grpc
from appliance.tts.adapters import ENGINES, InputRejected, SynthesisTracker
from appliance.tts.metrics import WorkerMetrics
from appliance.tts.model_manager import (
    CapacityExceeded,
    MemoryBudgetExceeded,
    ModelError,
    ModelInUse,
    ModelLoadFailed,
    ModelManager,
    NotResident,
    UnknownModel,
)
from appliance.tts.scheduler import DeadlineScheduler
from appliance.tts.sessions import SessionError, SessionNotFound, SessionRegistry, WorkerSession
from appliance.tts.stream import StreamError, SynthesisStream, drain_requests

log = logging.getLogger(__name__)

_MODEL_ERROR_CODES: dict[type[Exception], grpc.StatusCode] = {
    UnknownModel: grpc.StatusCode.NOT_FOUND,
    NotResident: grpc.StatusCode.FAILED_PRECONDITION,
    ModelInUse: grpc.StatusCode.FAILED_PRECONDITION,
    CapacityExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    MemoryBudgetExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelLoadFailed: grpc.StatusCode.UNAVAILABLE,
}
_STATE = {
    "available": pb.AVAILABLE,
    "loading": pb.LOADING,
    "resident": pb.RESIDENT,
    "failed": pb.FAILED,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _model_code(exc: Exception) -> grpc.StatusCode:
    for cls, code in _MODEL_ERROR_CODES.items():
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


class TTSService(tts_pb2_grpc.TTSServiceServicer):
    def __init__(
        self,
        settings: WorkerSettings,
        manager: ModelManager,
        sessions: SessionRegistry,
        *,
        scheduler: DeadlineScheduler,
        tracker: SynthesisTracker,
        metrics: WorkerMetrics,
        gpu: bool = False,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.sessions = sessions
        self.scheduler = scheduler
        self.tracker = tracker
        self.metrics = metrics
        self.gpu = gpu
        self.streams: dict[str, SynthesisStream] = {}
        self.draining = False
        self.on_change: Callable[[], None] = lambda: None  # sessions or resident models changed

    async def _abort(self, context, rpc: str, code: grpc.StatusCode, message: str):
        self.metrics.errors.labels(rpc, code.name).inc()
        log.warning("rpc=%s code=%s %s", rpc, code.name, message)
        await context.abort(code, message)

    # --- sessions --------------------------------------------------------------------------

    async def StartSession(self, request, context):
        sid = request.session_id.strip()
        if not sid or len(sid) > 128:
            await self._abort(
                context,
                "StartSession",
                grpc.StatusCode.INVALID_ARGUMENT,
                "session_id must be 1–128 characters",
            )
        if self.draining:
            await self._abort(context, "StartSession", grpc.StatusCode.UNAVAILABLE, "worker is shutting down")
        try:
            self.sessions.reserve(sid)
        except SessionError as exc:
            await self._abort(context, "StartSession", grpc.StatusCode[exc.code], str(exc))
        try:
            lease = await self.manager.acquire(request.model_id or None)
        except ModelError as exc:
            await self._abort(context, "StartSession", _model_code(exc), str(exc))
        options = dict(request.options)
        try:
            lease.adapter.check_options(options)
        except InputRejected as exc:
            lease.release()
            await self._abort(context, "StartSession", grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            self.sessions.add(WorkerSession(sid, lease, options))
        except SessionError as exc:  # a concurrent StartSession with the same id won the race
            lease.release()
            await self._abort(context, "StartSession", grpc.StatusCode[exc.code], str(exc))
        self._update_gauges()
        return pb.StartSessionResponse(
            success=True,
            message="session started",
            model_id=lease.model_id,
            sample_rate=OUTPUT_RATE,
            frame_duration_ms=FRAME_MS,
        )

    async def EndSession(self, request, context):
        stream = self.streams.get(request.session_id)
        if stream is not None:
            stream.stop()
        try:
            await self.sessions.end(request.session_id)
        except SessionError as exc:
            await self._abort(context, "EndSession", grpc.StatusCode[exc.code], str(exc))
        self._update_gauges()
        return pb.EndSessionResponse(success=True, message="session ended")

    async def end_idle_sessions(self, idle_s: float) -> list[str]:
        ended = []
        for sid in self.sessions.idle_sessions(idle_s):
            try:
                await self.sessions.end(sid, reason=f"idle for {idle_s:.0f}s")
                ended.append(sid)
            except SessionError:
                pass
        if ended:
            self._update_gauges()
        return ended

    # --- synthesis -------------------------------------------------------------------------

    async def Synthesize(self, request_iterator, context):
        chunks = request_iterator.__aiter__()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            await self._abort(
                context, "Synthesize", grpc.StatusCode.INVALID_ARGUMENT, "no TextChunk was sent"
            )
        try:
            session = self.sessions.get(first.session_id)
            await session.begin_stream(caller_gone=context.cancelled)
            if self.sessions.get(first.session_id) is not session:  # ended while it waited
                session.end_stream()
                raise SessionNotFound(first.session_id)
        except SessionError as exc:
            if not first.is_final:
                await drain_requests(chunks)
            await self._abort(context, "Synthesize", grpc.StatusCode[exc.code], str(exc))

        stream = SynthesisStream(
            session,
            scheduler=self.scheduler,
            tracker=self.tracker,
            audio=self.settings.audio,
            max_chars=self.settings.max_text_chars,
        )
        self.streams[session.session_id] = stream
        self.metrics.active_streams.inc()
        stream.start(_prepend(first, chunks))
        seq = 0
        voiced = 0  # text_offset of the last frame written
        sent = self.metrics.frames.labels(session.model_id)  # counted as they go: a stopped stream's too
        error: StreamError | None = None
        try:
            try:
                async for frame, text_offset in stream.frames():
                    if not await session.gate():
                        break
                    try:
                        await context.write(_audio_frame(session.session_id, seq, text_offset, frame))
                    finally:
                        session.write_done()
                    sent.inc()
                    voiced = text_offset
                    if seq == 0:
                        stream.stats.first_frame = time.perf_counter()
                    seq += 1
            except StreamError as exc:
                error = exc
            stream.stats.frames = seq
            final_offset = voiced if session.stopped else stream.stats.chars
        finally:
            # The session is free before the final frame goes out: a client that opens its next
            # stream as soon as it sees that frame must not find this one still open.
            try:
                await _closed(stream)
            finally:
                self.streams.pop(session.session_id, None)
                session.end_stream()
                self.metrics.active_streams.dec()
        if error is not None:
            await self._abort(context, "Synthesize", grpc.StatusCode[error.code], str(error))
        await context.write(_audio_frame(session.session_id, seq, final_offset, is_final=True))
        self._observe(session, stream)

    def _observe(self, session: WorkerSession, stream: SynthesisStream) -> None:
        stats = stream.stats
        model = session.model_id
        if stats.ttfa_s is not None:
            self.metrics.ttfa.labels(model).observe(stats.ttfa_s)
            self.metrics.recent_ttfa_s.append(stats.ttfa_s)
        if stats.rtf is not None:
            self.metrics.rtf.labels(model).observe(stats.rtf)
            self.metrics.recent_rtf.append(stats.rtf)
        log.info(
            "stream done session=%s model=%s segments=%d frames=%d ttfa_ms=%s rtf=%s stopped=%s",
            session.session_id,
            model,
            stats.segments,
            stats.frames,
            f"{stats.ttfa_s * 1000:.1f}" if stats.ttfa_s is not None else "-",
            f"{stats.rtf:.3f}" if stats.rtf is not None else "-",
            session.stopped,
        )

    # --- control ---------------------------------------------------------------------------

    async def Control(self, request, context):
        t0 = time.perf_counter()
        command = request.command
        if command not in (pb.PAUSE, pb.RESUME, pb.STOP, pb.RELOAD):
            await self._abort(
                context,
                "Control",
                grpc.StatusCode.INVALID_ARGUMENT,
                f"command must be PAUSE, RESUME, STOP or RELOAD (got {command})",
            )
        try:
            session = self.sessions.get(request.session_id)
        except SessionError as exc:
            await self._abort(context, "Control", grpc.StatusCode[exc.code], str(exc))
        name = pb.ControlCommand.Name(command)
        if command == pb.PAUSE:
            await session.pause()
            message = "paused" if session.streaming else "paused (no stream open)"
        elif command == pb.RESUME:
            session.resume()
            message = "resumed"
        elif command == pb.STOP:
            stream = self.streams.get(session.session_id)
            await session.stop()
            if stream is not None:
                stream.stop()
            message = "stopped" if stream is not None else "stopped (no stream open)"
        else:
            try:
                ms = await self.manager.reload(session.model_id)
            except ModelError as exc:
                await self._abort(context, "Control", _model_code(exc), str(exc))
            message = f"reloaded {session.model_id} in {ms:.0f} ms"
        self.metrics.control.labels(name).observe(time.perf_counter() - t0)
        log.info("control session=%s command=%s %s", session.session_id, name, message)
        return pb.ControlResponse(success=True, message=message, timestamp_ms=_now_ms())

    # --- models ----------------------------------------------------------------------------

    async def ListModels(self, request, context):
        models = [
            pb.ModelInfo(
                model_id=m.model_id,
                engine=m.engine,
                state=_STATE.get(m.state, pb.MODEL_STATE_UNSPECIFIED),
                native_sample_rate=m.sample_rate,
                language=m.language,
                refcount=m.refcount,
                idle_s=m.idle_s or 0.0,
                load_ms=m.load_ms or 0.0,
                is_default=m.is_default,
                resident_bytes=m.resident_bytes,
                device=m.device,
            )
            for m in self.manager.snapshot()
        ]
        return pb.ListModelsResponse(models=models)

    async def LoadModel(self, request, context):
        try:
            ms = await self.manager.load(request.model_id)
        except ModelError as exc:
            await self._abort(context, "LoadModel", _model_code(exc), str(exc))
        self._update_gauges()
        message = f"loaded in {ms:.0f} ms" if ms else "already resident"
        return pb.LoadModelResponse(success=True, message=message, load_ms=ms)

    async def UnloadModel(self, request, context):
        try:
            await self.manager.unload(request.model_id)
        except ModelError as exc:
            await self._abort(context, "UnloadModel", _model_code(exc), str(exc))
        self._update_gauges()
        return pb.UnloadModelResponse(success=True, message="unloaded")

    async def GetCapabilities(self, request, context):
        snapshot = self.manager.snapshot()
        return pb.GetCapabilitiesResponse(
            worker_name=self.settings.name,
            engines=sorted({m.engine for m in snapshot} & set(ENGINES)),
            resident_models=[m.model_id for m in snapshot if m.state == "resident"],
            available_models=[m.model_id for m in snapshot],
            output_sample_rates=[OUTPUT_RATE],
            frame_duration_ms=FRAME_MS,
            streaming=True,
            gpu=self.gpu,
            max_sessions=self.settings.max_sessions,
            active_sessions=len(self.sessions),
            languages=sorted({m.language for m in snapshot}),
            default_model=self.settings.models.default,
            engine_jobs=self.scheduler.busy,
        )

    def _update_gauges(self) -> None:
        self.metrics.active_sessions.set(len(self.sessions))
        resident = self.manager.resident_ids()
        self.metrics.resident_models.set(len(resident))
        for m in self.manager.snapshot():
            self.metrics.model_refcount.labels(m.model_id).set(m.refcount)
            self.metrics.model_resident_bytes.labels(m.model_id).set(m.resident_bytes)
        self.on_change()


async def _closed(stream: SynthesisStream) -> None:
    """Close the stream, to the end even when the call is cancelled meanwhile (a client that
    cancels just as its stream ends): the session is not free until its stream's tasks are done."""
    closing = asyncio.ensure_future(stream.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await closing
        raise


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    yield first
    async for item in rest:
        yield item


def _audio_frame(
    session_id: str, seq: int, text_offset: int, audio: bytes = b"", is_final: bool = False
) -> pb.AudioFrame:
    return pb.AudioFrame(
        session_id=session_id,
        audio_data=audio,
        sample_rate=OUTPUT_RATE,
        frame_duration_ms=FRAME_MS,
        sequence_number=seq,
        is_final=is_final,
        text_offset=text_offset,
    )
