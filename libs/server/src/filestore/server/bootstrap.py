"""The one gRPC asyncio server bootstrap shared by every Filestore service.

``create_server`` builds a server with health checking, reflection and five interceptors (outermost
first): logging (binds the RPC's context and logs one line per call), telemetry (the RPC's metrics, and
its span in the caller's trace), errors (typed domain errors to a ``google.rpc.Status`` with one
``ErrorInfo``), authentication (the bearer token to a principal) and the request edge (decodes the
request and runs :func:`filestore.server.request_checks.check_request` on it), so that a request that
does not decode or breaks a rule every request follows is refused like any other bad input.
``run_server`` serves until SIGTERM or SIGINT, then shuts down gracefully: health NOT_SERVING, stop
accepting and drain in-flight RPCs within the grace period, then the service's own cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from filestore.core import auth
from filestore.core.channels import REQUEST_ID_KEY
from filestore.core.errors import (
    STATUS_DETAILS_KEY,
    FilestoreError,
    Internal,
    InvalidArgument,
    Unimplemented,
    to_rpc_status,
)
from filestore.core.reasons import Reason
from filestore.core.tls import TlsSettings
from filestore.server import deadlines, metrics, tracing
from filestore.server.request_checks import check_request

__all__ = ["ServerHandle", "create_server", "run_server"]

log = structlog.get_logger("filestore.server")

#: Methods anyone may call without a token: load balancers and operators probe them.
PUBLIC_SERVICE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: Longest status message and ErrorInfo metadata value an error carries back. Both may quote the
#: request (an id that was not found), and a client refuses trailers beyond 8-16 KiB: an error
#: about a 100 KB id must still arrive as that error.
MAX_ERROR_MESSAGE_CHARS = 1024
MAX_ERROR_METADATA_CHARS = 256

_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Wrapper = Callable[[UnaryBehavior, grpc.HandlerCallDetails], UnaryBehavior]


def _wrap_unary(
    handler: grpc.RpcMethodHandler[Any, Any] | None, details: grpc.HandlerCallDetails, wrapper: Wrapper
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """Wrap the behaviour of a unary-unary handler; streaming handlers (health Watch, reflection)
    pass through unchanged."""
    if handler is None or handler.request_streaming or handler.response_streaming:
        return handler
    return grpc.unary_unary_rpc_method_handler(
        wrapper(handler.unary_unary, details),  # type: ignore[arg-type]
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for item_key, value in details.invocation_metadata or ():
        if item_key == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _final_code(context: grpc.aio.ServicerContext[Any, Any], *, raised: bool) -> grpc.StatusCode:
    """The status an RPC ended with: what the servicer or an abort set, UNKNOWN for an exception
    that set none, else OK."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN if raised else grpc.StatusCode.OK


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    """Binds method, request id and peer for the call's log lines, and logs one line per RPC with its
    status and duration. Health checks are logged at debug level: probes would drown the rest."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)

        def wrapper(behavior: UnaryBehavior, details: grpc.HandlerCallDetails) -> UnaryBehavior:
            async def logged(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                structlog.contextvars.clear_contextvars()
                request_id = _metadata_value(details, REQUEST_ID_KEY) or str(uuid.uuid4())
                structlog.contextvars.bind_contextvars(
                    rpc_method=details.method, request_id=request_id, peer=context.peer()
                )
                deadlines.serving(context.time_remaining())  # bounds the calls made to dependencies
                started = time.perf_counter()
                raised = False
                try:
                    return await behavior(request, context)
                except BaseException:
                    raised = True
                    raise
                finally:
                    status = _final_code(context, raised=raised).name
                    emit = log.debug if details.method.startswith(PUBLIC_SERVICE_PREFIXES) else log.info
                    emit("rpc", status=status, duration_ms=round((time.perf_counter() - started) * 1000, 3))

            return logged

        return _wrap_unary(handler, details, wrapper)


#: Statuses that mean the server failed (OpenTelemetry's gRPC conventions); the others are the
#: caller's business (NOT_FOUND, INVALID_ARGUMENT...) and leave the span's status unset.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Counts every unary RPC by method and status with its duration (Prometheus), and serves it in
    a SERVER span continuing the caller's ``traceparent``. Health checks and reflection are counted
    but get no span: probes every few seconds would bury the traces worth reading."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)

        def wrapper(behavior: UnaryBehavior, details: grpc.HandlerCallDetails) -> UnaryBehavior:
            method = details.method
            traced = not method.startswith(PUBLIC_SERVICE_PREFIXES)
            span_name = method.lstrip("/")
            service_name, _, method_name = span_name.partition("/")
            attributes = {"rpc.system": "grpc", "rpc.service": service_name, "rpc.method": method_name}

            async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                raised = False
                parent = tracing.extract_from_metadata(details.invocation_metadata) if traced else None
                scope = (
                    tracing.span(
                        span_name,
                        kind=tracing.SpanKind.SERVER,
                        parent=parent,
                        attributes=attributes,
                        record_exceptions=False,  # an abort is a status, set below, not a crash
                    )
                    if traced
                    else _NO_SPAN
                )
                with scope as span:
                    if traced and (trace_id := tracing.current_trace_id()) is not None:
                        # On every log line of the call, so logs and traces find each other.
                        structlog.contextvars.bind_contextvars(trace_id=trace_id)
                    try:
                        return await behavior(request, context)
                    except BaseException:
                        raised = True
                        raise
                    finally:
                        code = _final_code(context, raised=raised)
                        metrics.observe_rpc(method, code.name, time.perf_counter() - started)
                        if span is not None:
                            span.set_attribute("rpc.grpc.status_code", code.value[0])
                            if code in _SERVER_FAULTS:
                                tracing.mark_error(span, code.name)

            return observed

        return _wrap_unary(handler, details, wrapper)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns typed domain errors into a status with one ErrorInfo; anything else is INTERNAL,
    logged with its traceback and never shown to the caller."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)

        def wrapper(behavior: UnaryBehavior, details: grpc.HandlerCallDetails) -> UnaryBehavior:
            async def mapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await behavior(request, context)
                except FilestoreError as error:
                    await self._abort(context, error)
                except NotImplementedError:
                    # The generated servicer base answers this for RPCs a later release builds.
                    await self._abort(context, Unimplemented(f"{details.method} is not implemented yet"))
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception:
                    log.exception("rpc_failed")
                    await self._abort(context, Internal("internal error"))

            return mapped

        return _wrap_unary(handler, details, wrapper)

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], error: FilestoreError) -> None:
        error = _clipped(error)
        status = to_rpc_status(error, domain=self._domain)
        log.info("rpc_error", reason=error.reason, error_message=error.message)
        await context.abort(
            error.code,
            error.message,
            trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )


def _clipped(error: FilestoreError) -> FilestoreError:
    """``error`` with its message and metadata values cut to what a trailer can carry."""
    message = _clip(error.message, MAX_ERROR_MESSAGE_CHARS)
    metadata = {key: _clip(value, MAX_ERROR_METADATA_CHARS) for key, value in error.metadata.items()}
    if message == error.message and metadata == error.metadata:
        return error
    # Its reason as it is: one received from another service need not be in this release's vocabulary.
    return type(error).received(message, reason=error.reason, metadata=metadata, domain=error.domain)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the bearer token and makes the principal current for the servicer."""

    def __init__(self, verifier: auth.TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if details.method.startswith(PUBLIC_SERVICE_PREFIXES):
            return handler

        def wrapper(behavior: UnaryBehavior, details: grpc.HandlerCallDetails) -> UnaryBehavior:
            async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                principal = self._verifier.verify_header(_metadata_value(details, auth.AUTHORIZATION_KEY))
                structlog.contextvars.bind_contextvars(principal=principal.subject, tenant=principal.tenant)
                token = auth.set_current_principal(principal)
                try:
                    return await behavior(request, context)
                finally:
                    auth.reset_current_principal(token)

            return authenticated

        return _wrap_unary(handler, details, wrapper)


class RequestEdgeInterceptor(grpc.aio.ServerInterceptor):
    """Decodes the request itself and checks it before the servicer runs.

    gRPC would decode the request before any interceptor runs and answer a failure as UNKNOWN
    "Unexpected DecodeError", with no ErrorInfo. This handler takes the raw bytes instead (its
    deserializer is ``None``, which every interceptor outside it passes on), so a request that does
    not decode is INVALID_ARGUMENT ``MALFORMED_REQUEST`` through the error interceptor like any
    other refusal; a decoded one must then pass :func:`check_request`. It runs inside the
    authentication interceptor: an unauthenticated caller learns nothing about its request.
    """

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if (
            details.method.startswith(PUBLIC_SERVICE_PREFIXES)
            or handler is None
            or handler.request_streaming
            or handler.response_streaming
            or handler.request_deserializer is None  # a handler of raw bytes: nothing to decode
        ):
            return handler
        behavior: UnaryBehavior = handler.unary_unary
        deserialize: Callable[[bytes], Any] = handler.request_deserializer
        method = details.method

        async def checked(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                request = deserialize(raw)
            except DecodeError:
                raise InvalidArgument(
                    f"the request of {method} could not be decoded (malformed protobuf or a string "
                    "that is not UTF-8)",
                    reason=Reason.MALFORMED_REQUEST,
                ) from None
            check_request(request)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )


@dataclass(slots=True)
class ServerHandle:
    """A built, started-or-not server and what its lifecycle needs."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: The plaintext health-only server (:meth:`serve_health`), when there is one.
    health_server: grpc.aio.Server | None = None

    async def start(self) -> None:
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def serve_health(self, listen: str) -> int:
        """Serve the same health status, and nothing else, in plaintext on ``listen``; the port.

        A kubelet's ``grpc`` probe speaks no TLS: with the service's own port on TLS it could not
        probe it. Only the health service is here (no reflection, no RPC of the service), so a
        plaintext port discloses nothing more than whether the service is SERVING.
        """
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(listen)
        if port == 0:
            raise OSError(f"cannot listen on {listen}")
        await server.start()
        self.health_server = server
        return port

    async def stop(self, grace_s: float) -> None:
        """Graceful stop: NOT_SERVING first so balancers steer away, then drain, then cleanup."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for cleanup in reversed(self.on_shutdown):
            try:
                await cleanup()
            except Exception:
                log.exception("shutdown_cleanup_failed")
        # Last: until the end a probe hears NOT_SERVING rather than a refused connection.
        if self.health_server is not None:
            await self.health_server.stop(None)


def create_server(
    *,
    listen: str,
    domain: str,
    verifier: auth.TokenVerifier,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    tls: TlsSettings | None = None,
) -> ServerHandle:
    """Build a server bound to ``listen`` (``host:0`` picks a free port; see ``handle.port``).

    ``register`` adds the service's servicers and returns their full names (for health and
    reflection). ``domain`` is the ErrorInfo domain, e.g. ``upload.filestore.v1``.
    """
    server = grpc.aio.server(
        interceptors=[
            LoggingInterceptor(),
            TelemetryInterceptor(),
            ErrorInterceptor(domain),
            AuthInterceptor(verifier),
            RequestEdgeInterceptor(),
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    if tls is not None and tls.cert_file is not None and tls.key_file is not None:
        credentials = grpc.ssl_server_credentials(
            [(_read(tls.key_file), _read(tls.cert_file))],
            root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
            require_client_auth=tls.client_ca_file is not None,
        )
        port = server.add_secure_port(listen, credentials)
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return ServerHandle(server=server, port=port, health=health_servicer, service_names=names)


async def run_server(handle: ServerHandle, *, grace_s: float) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await handle.start()
    log.info("serving", port=handle.port, services=list(handle.service_names))
    await stop.wait()
    log.info("shutting_down", grace_s=grace_s)
    await handle.stop(grace_s)
    log.info("stopped")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
