"""Requests whose bytes do not parse as their message get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio deserializes a request before any servicer code runs, and a DecodeError there ends the
RPC with UNKNOWN and a traceback in the worker's log. This interceptor deserializes instead:
bytes that do not parse become a :class:`Malformed` that the method's wrapper turns into a clear
status. On a request stream (Synthesize) a first message that does not parse ends the call at
once; a later one ends the stream the way any bad chunk does, with a StreamError.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from appliance.tts.stream import StreamError, drain_requests

log = logging.getLogger(__name__)


class Malformed:
    def __init__(self, method: str, error: DecodeError) -> None:
        self.message = f"the request to {method} does not parse: {error}"


def _tolerant(deserializer, method: str):
    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Malformed(method, exc)

    return deserialize


async def _refuse(context, malformed: Malformed) -> None:
    log.warning("rpc code=INVALID_ARGUMENT %s", malformed.message)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed.message)


async def _checked(requests: AsyncIterator) -> AsyncIterator:
    async for request in requests:
        if isinstance(request, Malformed):
            raise StreamError("INVALID_ARGUMENT", request.message)
        yield request


class MalformedRequests(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method.rpartition("/")[2]
        deserialize = _tolerant(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            return handler._replace(request_deserializer=deserialize, unary_unary=_unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(
                request_deserializer=deserialize, unary_stream=_unary_stream(handler.unary_stream)
            )
        if handler.stream_stream is not None:
            return handler._replace(
                request_deserializer=deserialize, stream_stream=_stream(handler.stream_stream)
            )
        return handler  # stream-unary: no such method here


def _unary(behavior):
    async def unary(request, context):
        if isinstance(request, Malformed):
            await _refuse(context, request)
        return await behavior(request, context)

    return unary


async def _respond(behavior, request, context) -> None:
    """Run a response-streaming method written either way grpc.aio takes: writing with
    ``context.write`` or yielding its responses."""
    if inspect.isasyncgenfunction(behavior):
        async for response in behavior(request, context):
            await context.write(response)
    else:
        await behavior(request, context)


def _unary_stream(behavior):
    async def unary_stream(request, context):
        if isinstance(request, Malformed):
            await _refuse(context, request)
        await _respond(behavior, request, context)

    return unary_stream


def _stream(behavior):
    async def stream(requests, context):
        requests = requests.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            first = None
        if isinstance(first, Malformed):
            await drain_requests(requests)  # so that a client still writing reads this status
            await _refuse(context, first)
        await _respond(behavior, _checked(_prepend(first, requests)), context)

    return stream


async def _prepend(first, rest: AsyncIterator) -> AsyncIterator:
    if first is not None:
        yield first
    async for item in rest:
        yield item
