"""The TTS worker's gRPC ABI under bounded fuzzing: a real worker (the real Piper voice) gets, on raw
channels that send bytes as they are, a seeded mix of random bytes and mutated protobufs (flipped
bytes, truncations, fields of the wrong wire type, huge and invalid-UTF-8 strings, unknown model
ids, out-of-range enums) on every RPC, and Synthesize streams that misbehave: junk chunks, chunks
after the final one or for another session, streams cancelled midway, a second stream on a
session, many streams at once. Afterwards the worker is alive, its log has no traceback, its
/metrics show no session or stream open and every model's refcount back where it was, and a
well-formed synthesis still returns audio."""

from __future__ import annotations

import asyncio
import random
import re
import urllib.request

import grpc
import pytest
from services import WorkerProcess

from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import TTSClient

SEED = 20261203
CLIENTS = 8
UNARY_PER_CLIENT = 60
STREAMS_PER_CLIENT = 6
CONCURRENT_STREAMS = 16
MODEL = "piper-en_US-joe-medium"
SERVICE = "/appliance.tts.v1.TTSService/"
REQUESTS = {
    "StartSession": pb.StartSessionRequest,
    "EndSession": pb.EndSessionRequest,
    "Control": pb.ControlRequest,
    "ListModels": pb.ListModelsRequest,
    "LoadModel": pb.LoadModelRequest,
    "UnloadModel": pb.UnloadModelRequest,
    "GetCapabilities": pb.GetCapabilitiesRequest,
}
# What a worker may answer to bad input. UNKNOWN (a servicer raised) or a crash is a bug.
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.CANCELLED,
    # What a client still writing may read when the worker's status overtakes it; the worker
    # itself never sends it for bad input (its log says what it sent, and is checked).
    grpc.StatusCode.INTERNAL,
}
CALL_TIMEOUT_S = 60  # a guard against a hung RPC, not a measurement
WORDS = [
    "Hello.",
    "The lights are off.",
    "Good night, sleep well.",
    "One, two.",
    "é ü 🙂",
    "...",
    "a\x00b\x07c.",
]


@pytest.fixture(scope="module")
def worker():
    """A worker of its own: the fuzz unloads and reloads its model, and its log is read whole."""
    w = WorkerProcess()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


# --- the protobuf wire format, by hand (so that it can be got wrong on purpose) ---------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, data: bytes) -> bytes:
    return tag(number, 2) + varint(len(data)) + data


def wrong_field(rng: random.Random) -> bytes:
    """A field of a random number with a random wire type: often not the type the schema says."""
    number = rng.choice([1, 2, 3, 4, 5, 99, 536_870_911])
    kind = rng.randrange(6)
    if kind == 0:
        return tag(number, 0) + varint(rng.choice([0, 1, -1, 2**31, 2**63, 42]))
    if kind == 1:
        return length_delimited(number, rng.randbytes(rng.randrange(0, 40)))
    if kind == 2:
        return tag(number, 1) + rng.randbytes(8)
    if kind == 3:
        return tag(number, 5) + rng.randbytes(4)
    if kind == 4:
        return tag(number, rng.choice([3, 4, 6, 7]))  # groups (gone in proto3) and no wire type at all
    return tag(number, 2) + varint(rng.choice([2**31, 2**40, 10**6]))  # a length past the end


def odd_string(rng: random.Random, sessions: list[str]) -> str | bytes:
    choices = [
        lambda: rng.choice(sessions) if sessions else "",
        lambda: "",
        lambda: " " * rng.randrange(1, 4),
        lambda: "x" * rng.choice([129, 10_000, 1_000_000]),
        lambda: rng.choice(["no-such-voice", "../../etc/passwd", MODEL + "\0", MODEL.upper(), "🙂" * 20]),
        lambda: MODEL,
        lambda: b"\xff\xfe" + rng.randbytes(rng.randrange(0, 16)),  # not UTF-8
        lambda: rng.randbytes(rng.randrange(1, 24)).decode("latin-1"),
    ]
    return rng.choice(choices)()


def string_field(number: int, value: str | bytes) -> bytes:
    return length_delimited(number, value if isinstance(value, bytes) else value.encode())


def plausible(rpc: str, rng: random.Random, sessions: list[str]) -> bytes:
    """A request of the right shape whose values are odd."""
    if rpc == "StartSession":
        out = string_field(1, odd_string(rng, sessions)) + string_field(2, odd_string(rng, sessions))
        if rng.random() < 0.3:  # options: a map entry is a message of key 1 and value 2
            entry = string_field(1, odd_string(rng, [])) + string_field(2, odd_string(rng, []))
            out += length_delimited(3, entry if rng.random() < 0.7 else rng.randbytes(9))
        return out
    if rpc == "Control":
        command = rng.choice([0, 1, 2, 3, 4, 5, 42, -1, 2**31 - 1, 2**63, 1, 2, 3])
        if command == 4 and rng.random() < 0.8:  # RELOAD loads the model again: only now and then
            command = 1
        return string_field(1, odd_string(rng, sessions)) + tag(2, 0) + varint(command)
    if rpc in ("EndSession", "LoadModel", "UnloadModel"):
        value = odd_string(rng, sessions)
        if rpc == "UnloadModel" and value == MODEL and rng.random() < 0.7:
            value = "no-such-voice"  # an unload of the real model makes the next session load it
        return string_field(1, value)
    return b""  # ListModels, GetCapabilities: no fields


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0 and data:
        out = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 1 and data:
        return data[: rng.randrange(len(data))]
    if kind == 2:
        return data + wrong_field(rng)
    if kind == 3:
        return wrong_field(rng) + data
    return data + data[: rng.randrange(len(data) + 1)]  # fields repeated, perhaps cut


def junk_request(rpc: str, rng: random.Random, sessions: list[str]) -> bytes:
    roll = rng.random()
    if roll < 0.2:
        return rng.randbytes(rng.choice([0, 1, 2, 7, 64, 4096]))
    if roll < 0.25:
        return b"\n" + varint(5 << 20) + b"x" * (5 << 20)  # over the worker's 4 MiB message limit
    data = plausible(rpc, rng, sessions)
    return mutate(data, rng) if roll < 0.7 else data


def text_chunk(rng: random.Random, sid: str | bytes, final: bool = False) -> bytes:
    text = rng.choice(WORDS) if rng.random() < 0.9 else odd_string(rng, [])
    out = string_field(1, sid) + string_field(2, text) + tag(4, 0) + varint(rng.randrange(-2, 99))
    return out + (tag(3, 0) + varint(1) if final else b"")


# --- the calls ---------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, address: str) -> None:
        self.address = address
        self.codes: dict[str, set[grpc.StatusCode]] = {}
        self.started: set[str] = set()  # sessions a fuzzed StartSession may have opened

    def note(self, rpc: str, code: grpc.StatusCode) -> None:
        self.codes.setdefault(rpc, set()).add(code)

    async def unary(self, channel: grpc.aio.Channel, rpc: str, request: bytes) -> None:
        call = channel.unary_unary(SERVICE + rpc)  # no serializers: the bytes go as they are
        try:
            await call(request, timeout=CALL_TIMEOUT_S)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        self.note(rpc, code)
        if rpc == "StartSession" and code == grpc.StatusCode.OK:
            self.started.add(pb.StartSessionRequest.FromString(request).session_id.strip())

    async def stream(self, channel: grpc.aio.Channel, rng: random.Random, sessions: list[str]) -> None:
        call = channel.stream_stream(SERVICE + "Synthesize")(timeout=CALL_TIMEOUT_S)
        sid = rng.choice(sessions)
        plan = rng.randrange(8)
        try:
            if plan == 0:  # junk on the stream, then a proper chunk
                await call.write(junk_request("StartSession", rng, sessions))
                await call.write(text_chunk(rng, sid, final=True))
            elif plan == 1:  # the first chunk for nobody, or for a string that is no session
                await call.write(text_chunk(rng, odd_string(rng, []), final=rng.random() < 0.5))
            elif plan == 2:  # a chunk for another session mid-stream
                await call.write(text_chunk(rng, sid))
                await call.write(text_chunk(rng, rng.choice([*sessions, "ghost"]) + "-other"))
            elif plan == 3:  # chunks after the final one
                await call.write(text_chunk(rng, sid, final=True))
                for _ in range(rng.randrange(1, 4)):
                    await call.write(text_chunk(rng, sid, final=rng.random() < 0.5))
            elif plan == 4:  # over max_text_chars
                await call.write(string_field(1, sid) + string_field(2, "word " * 4_001))
            elif plan == 5:  # mutated chunks
                for _ in range(rng.randrange(1, 5)):
                    await call.write(mutate(text_chunk(rng, sid), rng))
            elif plan == 6:  # nothing at all
                pass
            else:  # a proper stream, cancelled as it speaks (or before)
                await call.write(text_chunk(rng, sid, final=True))
                await self._read(call, stop_after=rng.randrange(0, 6))
                call.cancel()
                self.note("Synthesize", grpc.StatusCode.CANCELLED)
                return
            if rng.random() < 0.8:
                await call.done_writing()
            else:  # hung up without half-closing
                call.cancel()
                self.note("Synthesize", grpc.StatusCode.CANCELLED)
                return
            await self._read(call)
        except grpc.aio.AioRpcError as exc:
            self.note("Synthesize", exc.code())
        except asyncio.InvalidStateError:  # written to a call the worker has already ended
            pass

    async def _read(self, call, stop_after: int | None = None) -> None:
        got = 0
        while stop_after is None or got < stop_after:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                self.note("Synthesize", (await call.code()))
                return
            got += 1

    async def client(self, rng: random.Random) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            own = [f"fz-{rng.randrange(10**9)}" for _ in range(2)]
            for sid in own:
                await self.unary(channel, "StartSession", string_field(1, sid))
            for _ in range(UNARY_PER_CLIENT):
                rpc = rng.choice([*REQUESTS, "NoSuchMethod"])
                if rpc == "EndSession" and rng.random() < 0.7:
                    rpc = "Control"  # keep the client's sessions alive for its streams, mostly
                await self.unary(channel, rpc, junk_request(rpc, rng, own))
            for _ in range(STREAMS_PER_CLIENT):
                await self.stream(channel, rng, own)
            for sid in own:
                await self.unary(channel, "EndSession", string_field(1, sid))

    async def crowd(self, rng: random.Random, name: str) -> None:
        """Many streams at once, each on its session; some cancelled, some doubled."""
        async with TTSClient(self.address) as client:
            ids = [f"fz-{name}-{i}" for i in range(CONCURRENT_STREAMS)]
            await asyncio.gather(*(client.start_session(i) for i in ids))
            self.started.update(ids)

            async def one(sid: str) -> None:
                call = client.synthesize(sid, [rng.choice(WORDS)])
                cancel_at, got = rng.randrange(0, 80), 0  # early, late, as the stream ends, or never
                try:
                    async for _ in call:
                        got += 1
                        if got == cancel_at:
                            call.cancel()
                            break
                except grpc.aio.AioRpcError as exc:
                    self.note("Synthesize", exc.code())

            await asyncio.gather(*(one(i) for i in ids), *(one(i) for i in ids[:4]))  # 4 doubled

    async def end_all(self) -> None:
        async with TTSClient(self.address) as client:
            for sid in self.started:
                try:
                    await client.end_session(sid)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND, (sid, exc)


def metrics(worker) -> str:
    return (
        urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).read().decode()
    )


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def refcounts(text: str) -> dict[str, float]:
    pattern = r'^appliance_tts_model_refcount\{model="([^"]*)"\} (\S+)$'
    return {m: float(v) for m, v in re.findall(pattern, text, re.MULTILINE)}


async def test_fuzzed_grpc_requests_crash_nothing_and_leak_no_session(worker):
    before = refcounts(metrics(worker))
    rng = random.Random(SEED)
    fuzzer = Fuzzer(worker.address)
    await asyncio.gather(*(fuzzer.client(random.Random(rng.random())) for _ in range(CLIENTS)))
    for name in ("crowd", "crowd-again"):
        await fuzzer.crowd(random.Random(rng.random()), name)
    await fuzzer.end_all()

    unexpected = {rpc: codes - EXPECTED for rpc, codes in fuzzer.codes.items() if codes - EXPECTED}
    assert not unexpected, f"{unexpected}\n{worker.log()[-6000:]}"
    assert grpc.StatusCode.INVALID_ARGUMENT in fuzzer.codes["StartSession"]
    assert grpc.StatusCode.UNIMPLEMENTED in fuzzer.codes["NoSuchMethod"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        text = metrics(worker)
        if not gauge(text, "appliance_tts_active_sessions") and not gauge(
            text, "appliance_tts_active_streams"
        ):
            break
        await asyncio.sleep(0.5)
    assert gauge(text, "appliance_tts_active_sessions") == 0, worker.log()[-6000:]
    assert gauge(text, "appliance_tts_active_streams") == 0, worker.log()[-6000:]
    after = refcounts(text)
    assert {m: after[m] for m in after} == {m: before.get(m, 0.0) for m in after}, (before, after)
    assert worker.proc.poll() is None, worker.log()
    assert "Traceback" not in worker.log(), worker.log()[-6000:]
    assert "code=INTERNAL" not in worker.log() and "code=UNKNOWN" not in worker.log(), worker.log()[-6000:]

    async with TTSClient(worker.address) as client:
        await client.start_session("fz-after")
        pcm, frames = await client.synthesize_all("fz-after", "Still speaking after all that.")
        await client.end_session("fz-after")
        assert len(pcm) > 48_000 and frames[-1].is_final  # over half a second of audio
        assert (await client.capabilities()).active_sessions == 0


@pytest.fixture(scope="module")
def mock_worker():
    w = WorkerProcess(env={"APPLIANCE_MODELS__DEFAULT": "mock-sine"})
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


async def test_streams_cancelled_at_any_frame_leave_no_stream_open(mock_worker):
    """Hundreds of streams cancelled at a random frame, some just as they end (a cancel landing
    while the worker closes a finished stream once left it counted open): the mock engine, for
    the volume such a race needs."""
    rng = random.Random(SEED)
    async with TTSClient(mock_worker.address) as client:

        async def one(sid: str) -> grpc.aio.AioRpcError | None:
            call = client.synthesize(sid, ["one two three four"])
            cancel_at, got = rng.randrange(0, 40), 0
            try:
                async for _ in call:
                    got += 1
                    if got >= cancel_at:
                        call.cancel()
                        break
            except grpc.aio.AioRpcError as exc:
                return exc
            return None

        for n in range(30):
            ids = [f"fz-cancel-{n}-{i}" for i in range(20)]
            await asyncio.gather(*(client.start_session(i) for i in ids))
            # Every stream of the round runs to its end before any is judged: none outlives the test.
            failed = await asyncio.gather(*(one(i) for i in ids))
            await asyncio.gather(*(client.end_session(i) for i in ids))
            odd = [exc for exc in failed if exc is not None and exc.code() != grpc.StatusCode.CANCELLED]
            assert not odd, (
                f"{odd[0]!r}\nworker alive: {mock_worker.proc.poll() is None}\n" + mock_worker.log()[-6000:]
            )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while gauge(metrics(mock_worker), "appliance_tts_active_streams") and loop.time() < deadline:
        await asyncio.sleep(0.2)
    text = metrics(mock_worker)
    assert gauge(text, "appliance_tts_active_streams") == 0, mock_worker.log()[-4000:]
    assert gauge(text, "appliance_tts_active_sessions") == 0, mock_worker.log()[-4000:]
    assert "Traceback" not in mock_worker.log(), mock_worker.log()[-6000:]
