"""Bad input gets a clear gRPC status, the worker stays up and refcounts return to zero."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import Control, TTSClient


@pytest.fixture
async def client(piper_worker):
    async with TTSClient(piper_worker.address) as c:
        yield c
        # Whatever the test did, the worker is still serving and no model is left referenced.
        caps = await c.capabilities()
        assert caps.active_sessions == 0, "a test left a session open"
        assert all(m.refcount == 0 for m in (await c.list_models()).models)


def sid() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


async def expect_status(code: grpc.StatusCode, coro) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    assert info.value.code() == code, (info.value.code(), info.value.details())
    assert info.value.details(), "the error must say what is wrong"
    return info.value.details()


async def test_empty_text_is_served_with_just_the_final_frame(client):
    s = sid()
    await client.start_session(s)
    pcm, frames = await client.synthesize_all(s, "")
    assert pcm == b"" and len(frames) == 1 and frames[0].is_final and frames[0].sequence_number == 0
    await client.end_session(s)


@pytest.mark.parametrize("text", ["...!?", "🙂🙂🎉", "  \n\t ", "—-–"])
async def test_unspeakable_text_is_served_without_audio(client, text):
    s = sid()
    await client.start_session(s)
    pcm, frames = await client.synthesize_all(s, text)
    assert pcm == b"" and frames[-1].is_final
    await client.end_session(s)


async def test_huge_text_is_refused_with_invalid_argument(client):
    s = sid()
    await client.start_session(s)
    details = await expect_status(
        grpc.StatusCode.INVALID_ARGUMENT, client.synthesize_all(s, "word " * 20_000)
    )
    assert "characters" in details
    pcm, _ = await client.synthesize_all(s, "Fine again.")  # the session still works
    assert pcm
    await client.end_session(s)


async def test_unknown_model_is_not_found(client):
    details = await expect_status(grpc.StatusCode.NOT_FOUND, client.start_session(sid(), "no-such-voice"))
    assert "no-such-voice" in details and "piper-en_US-joe-medium" in details
    await expect_status(grpc.StatusCode.NOT_FOUND, client.load_model("no-such-voice"))


async def test_unknown_session_for_control_synthesize_and_end(client):
    await expect_status(grpc.StatusCode.NOT_FOUND, client.control("ghost", Control.PAUSE))
    await expect_status(grpc.StatusCode.NOT_FOUND, client.synthesize_all("ghost", "Hello."))
    await expect_status(grpc.StatusCode.NOT_FOUND, client.end_session("ghost"))


async def test_unspecified_command_is_invalid(client):
    s = sid()
    await client.start_session(s)
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.control(s, pb.CONTROL_COMMAND_UNSPECIFIED))
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.control(s, 42))
    await client.end_session(s)


async def test_empty_and_duplicate_session_ids(client):
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, client.start_session(""))
    s = sid()
    await client.start_session(s)
    await expect_status(grpc.StatusCode.ALREADY_EXISTS, client.start_session(s))
    await client.end_session(s)


async def test_second_stream_on_a_session_is_refused(client):
    s = sid()
    await client.start_session(s)
    release = asyncio.Event()

    async def slow_text():
        yield "This stream stays open."
        await release.wait()

    first = client.synthesize(s, slow_text())
    reader = asyncio.create_task(first.read())  # opens the first stream
    await asyncio.sleep(0.3)
    await expect_status(grpc.StatusCode.FAILED_PRECONDITION, client.synthesize_all(s, "Second."))
    release.set()
    assert (await reader).audio_data
    while (frame := await first.read()) is not grpc.aio.EOF:
        last = frame
    assert last.is_final
    await client.end_session(s)


async def test_stream_with_no_chunks_is_invalid(client):
    async def nothing():
        return
        yield  # unreachable: it makes this an empty async generator

    call = client.stub.Synthesize(nothing())
    await expect_status(grpc.StatusCode.INVALID_ARGUMENT, call.read())


async def test_client_cancelling_mid_stream_leaves_the_worker_healthy(client):
    s = sid()
    await client.start_session(s)
    call = client.synthesize(s, ["A fairly long sentence that will take a moment to speak aloud. " * 5])
    got = 0
    async for frame in call:
        got += 1
        if got == 5:
            call.cancel()
            break
    await asyncio.sleep(0.3)
    caps = await client.capabilities()
    assert caps.active_sessions == 1
    # The session can stream again: its previous stream was cleaned up.
    pcm, frames = await client.synthesize_all(s, "After the cancel.")
    assert pcm and frames[-1].is_final
    await client.end_session(s)


async def test_a_burst_of_fifty_sessions(client):
    ids = [sid() for _ in range(50)]
    replies = await asyncio.gather(*(client.start_session(i) for i in ids))
    assert all(r.success for r in replies)
    assert (await client.capabilities()).active_sessions == 50
    default = next(m for m in (await client.list_models()).models if m.is_default)
    assert default.refcount == 50
    results = await asyncio.gather(*(client.synthesize_all(i, "Hi.") for i in ids[:10]))
    assert all(frames[-1].is_final and pcm for pcm, frames in results)
    await asyncio.gather(*(client.end_session(i) for i in ids))
