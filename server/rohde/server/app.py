"""The FastAPI application: `create_app(settings)`; the lifespan owns every resource.

Resources (model manager and ONNX session, stream workers and watchdog, inference thread, WebSocket
hub, decision marker outlet) are built on start-up in a `ServerRuntime`, handed to routes through a
typed dependency, and stopped in reverse order on shutdown. Shutdown first tells every WebSocket client
(`announce_shutdown`: a `server_stopping` status, then close code 1001), then joins every thread.

`/ws` only sends: a client frame of any kind closes the connection with 1003, a message over the
server's size limit with 1009 (by the WebSocket protocol layer), and `?stream=` with an id the server
has never known (after a short wait for a stream that is still being found) with 1008.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # ships no type information

from rohde.core.errors import ModelPackageError
from rohde.core.version import VERSION
from rohde.server.alignment_routes import add_alignment_routes
from rohde.server.allocator import trim_heap_periodically
from rohde.server.api_models import (
    ActiveModelInfo,
    ErrorResponse,
    HealthResponse,
    MessageSchemas,
    ModelPackageSummary,
    ModelsResponse,
    ReadyResponse,
    RequestRefused,
    StreamSnapshot,
    StreamsResponse,
    WorkerThreads,
)
from rohde.server.cue_listener import CueListener, ReceivedCue
from rohde.server.dashboard_routes import add_dashboard
from rohde.server.hub import Hub
from rohde.server.inference import MAX_NAME_CHARS, GpuRequiredError, ModelManager
from rohde.server.inference_loop import InferenceLoop, Publisher
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamQuery
from rohde.server.markers import DecisionMarkerOutlet
from rohde.server.messages import CueMessage, PredictionMessage, StatusEvent, StatusMessage
from rohde.server.metrics import ServerMetrics
from rohde.server.security import RequestGuard, loggable, read_refusal, token_matches, websocket_refusal
from rohde.server.settings import ServerSettings
from rohde.server.stream_manager import StreamManager
from rohde.server.threads import running_owned_threads, shared_thread_backlogs

logger = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455, section 7.4.1).
WS_GOING_AWAY = 1001  # the server is stopping
WS_UNSUPPORTED_DATA = 1003  # the client sent a frame; this endpoint only sends
WS_POLICY_VIOLATION = 1008  # an unknown ?stream= id
SHUTDOWN_NOTICE_S = 0.5  # how long shutdown waits for the clients' close frames before stopping threads
# How long a subscription to a stream id the server does not know yet waits for it to be found: a client
# started together with the amplifier subscribes before the watchdog's first scans.
UNKNOWN_STREAM_WAIT_S = 5.0


@dataclass
class ServerRuntime:
    """Everything the lifespan owns."""

    settings: ServerSettings
    models: ModelManager
    metrics: ServerMetrics
    hub: Hub
    streams: StreamManager
    inference: InferenceLoop
    markers: DecisionMarkerOutlet | None
    cues: CueListener | None = None  # forwards calibration cues (`rohde record`) to the WebSocket clients
    started_at: float = field(default_factory=time.time)
    server_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def not_ready_reason(self) -> str | None:
        if self.models.active is None:
            error = self.models.last_error or "no model activated"
            return f"No active model: {error}"
        if not self.inference.alive:
            return "The inference thread is not running."
        if not self.streams.alive:
            return "The stream watchdog is not running."
        return None

    def model_info(self) -> dict[str, Any] | None:
        active = self.models.active
        if active is None:
            return None
        meta = active.package.metadata
        return {
            "name": meta.name, "version": meta.version, "folder": active.package.path.name,
            "generation": active.generation, "provider": active.engine.provider, "labels": meta.labels,
            "n_channels": meta.n_channels, "fs_hz": meta.fs_hz, "window_ms": meta.window_ms, "hop_ms": meta.hop_ms,
            "window_samples": meta.window_samples, "onnx_sha256": meta.onnx_sha256, "metrics": meta.metrics,
            "layout": active.package.layout.to_dict(),
        }


class ActivateRequest(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS,
                      description="Folder name of the package in the models folder (GET /models lists them).")


def get_runtime(request: Request) -> ServerRuntime:
    runtime: ServerRuntime = request.app.state.runtime
    return runtime


async def _runtime_dependency(request: Request) -> ServerRuntime:
    # Dependencies and routes that only read in-memory state are async: a sync one costs a thread-pool hop
    # per request, which caps the request rate a probe or dashboard can have next to the streams.
    return get_runtime(request)


Runtime = Annotated[ServerRuntime, Depends(_runtime_dependency)]

# How clients present tokens; declared so /openapi.json and the docs' "Authorize" know them.
bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearer",
                           description="The admin token (model changes), or the read token where reads need one.")
query_token_scheme = APIKeyQuery(name="token", auto_error=False, scheme_name="token query",
                                 description="The read token as `?token=`, for clients that cannot set headers.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]

# The Swagger UI files /docs loads, served from the swagger-ui-bundle package (no CDN, no third party).
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon-32x32.png": "image/png"}


def _build_runtime(settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> ServerRuntime:
    metrics = ServerMetrics()
    hub = Hub(queue_size=settings.ws_queue_size, on_drop=metrics.count_dropped)
    hub.bind(loop)
    models = ModelManager(settings.models_dir, providers=settings.providers, require_gpu=settings.require_gpu,
                          warmup_batch=settings.max_batch)
    try:
        models.activate(settings.model)
    except GpuRequiredError:
        raise  # require_gpu: the server must not start on CPU
    except ModelPackageError as exc:
        logger.error("Starting without a model (not ready): %s", exc)
    jobs = JobQueue(settings.inference_queue_size, metrics)

    def announce(event: StatusEvent, stream_id: str, detail: str, source_id: str | None) -> None:
        hub.publish_threadsafe(StatusMessage(event=event, server_time=time.time(), stream_id=stream_id,
                                             detail=detail, source_id=source_id))

    config = settings.ingest_config()
    query = StreamQuery(name=settings.stream_name, type=tuple(settings.stream_type or ()),
                        source_id=settings.stream_source_id, channels=settings.stream_channels)
    streams = StreamManager(query=query, models=models, jobs=jobs, metrics=metrics, config=config, announce=announce,
                            max_streams=settings.max_streams, resolve_interval_s=settings.resolve_interval_s)
    publishers: list[Publisher] = []
    markers = None
    if settings.marker_outlet:
        markers = DecisionMarkerOutlet(name=settings.marker_stream_name,
                                       source_id=f"rohde-decisions-{uuid.uuid4().hex[:8]}",
                                       lsl_config=settings.lsl_config)
        publishers.append(markers.publish)
    inference = InferenceLoop(jobs=jobs, models=models, metrics=metrics, publishers=publishers,
                              batch_publishers=[hub.publish_many_threadsafe], vote_k=settings.vote_k,
                              confidence_threshold=settings.confidence_threshold, max_batch=settings.max_batch)
    def forward_cue(received: ReceivedCue) -> None:
        cue = received.cue
        hub.publish_threadsafe(CueMessage(label=cue.label, phase=cue.phase, remaining_s=cue.remaining_s,
                                          index=cue.index, total=cue.total, condition=cue.condition,
                                          lsl_time=received.lsl_time, server_time=time.time(),
                                          source_id=received.source_id))

    cues = CueListener(forward_cue, name=settings.cue_stream_name, lsl_config=settings.lsl_config)
    return ServerRuntime(settings=settings, models=models, metrics=metrics, hub=hub, streams=streams,
                         inference=inference, markers=markers, cues=cues)


def _add_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from the installed swagger-ui-bundle, so the page works offline and loads
    nothing from a third party (the validator badge, which calls an outside service, is off)."""

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title}: API",
                                   swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        # Only the files the page uses: the bundle's own index.html would load a demo API from the web.
        if name not in DOCS_ASSETS:
            raise HTTPException(404, detail="No such documentation asset.")
        return FileResponse(Path(swagger_ui_path) / name, media_type=DOCS_ASSETS[name])


async def _refuse_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body without the echo of what was sent: a 60 KB name must not come back (or reach a
    log) in full, so each error keeps its type, location and message, and a short input."""
    if not isinstance(exc, RequestValidationError):  # registered for this class only
        raise exc
    errors = []
    for error in exc.errors():
        entry: dict[str, Any] = {"type": error.get("type"), "msg": error.get("msg"),
                                 "loc": [part if isinstance(part, int) else loggable(part)[1:-1]
                                         for part in error.get("loc", ())]}
        value = error.get("input")
        if value is None or isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 64):
            entry["input"] = value
        errors.append(entry)
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(settings: ServerSettings) -> FastAPI:
    """The app for `settings`; resources are created by its lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await asyncio.to_thread(_build_runtime, settings, asyncio.get_running_loop())
        app.state.runtime = runtime
        runtime.inference.start()
        runtime.streams.start()
        if runtime.cues is not None:
            runtime.cues.start()
        logger.info("RoHDE server up: model %s, streams %s.", runtime.models.describe_active(),
                    runtime.streams.query.describe())
        trimmer = asyncio.create_task(trim_heap_periodically(), name="rohde-heap-trim")
        try:
            yield
        finally:
            trimmer.cancel()
            await announce_shutdown(app)  # done already when `rohde serve` stops (before uvicorn closes sockets)
            await asyncio.to_thread(runtime.streams.stop)
            await asyncio.to_thread(runtime.inference.stop)
            if runtime.cues is not None:
                await asyncio.to_thread(runtime.cues.stop)
            if runtime.markers is not None:
                runtime.markers.close()
            running = running_owned_threads()
            if running:
                logger.warning("RoHDE server stopped; threads still running: %s.", ", ".join(running))
            else:
                logger.info("RoHDE server stopped: every worker thread joined.")

    app = FastAPI(
        docs_url=None,  # served below from the installed Swagger UI; ReDoc would need a CDN
        redoc_url=None,
        title="RoHDE gesture server",
        version=VERSION,
        description=(
            "Real-time gesture recognition from HD-EMG LSL streams. Decisions are pushed on the WebSocket "
            "`/ws` as JSON `PredictionMessage`s (and `StatusMessage`s for stream and model events); the "
            "REST routes report health, readiness, models, streams and Prometheus metrics."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_request_bytes)
    app.add_exception_handler(RequestValidationError, _refuse_invalid_request)
    _add_docs(app)
    add_dashboard(app)

    async def require_reader(bearer: Bearer, query_token: Annotated[str | None, Security(query_token_scheme)]) -> None:
        refusal = read_refusal(bearer.credentials if bearer else query_token, read_token=settings.read_token,
                               admin_token=settings.admin_token)
        if refusal:
            raise HTTPException(401, detail=refusal, headers={"WWW-Authenticate": "Bearer"})

    async def require_admin(bearer: Bearer) -> None:
        if not settings.admin_token:
            raise HTTPException(403, detail="Model changes are disabled: the server has no ROHDE_ADMIN_TOKEN.")
        if not token_matches(bearer.credentials if bearer else None, settings.admin_token):
            raise HTTPException(401, detail="A valid 'Authorization: Bearer <token>' header is required.",
                                headers={"WWW-Authenticate": "Bearer"})

    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorResponse, "description": "The token is missing or wrong.",
              "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}}}
    # Reads need a token only when the server has a read token; /health and /ready stay open for probes.
    reading = [Depends(require_reader)] if settings.read_token else []
    read_errors = unauthorized if settings.read_token else {}
    # /metrics answers text: its JSON error body is declared by hand (a "model" takes the route's media type).
    json_unauthorized = {key: value for key, value in unauthorized[401].items() if key != "model"}
    json_unauthorized["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    metrics_read_errors: dict[int | str, dict[str, Any]] = {401: json_unauthorized} if settings.read_token else {}

    @app.get("/health", summary="Liveness and errors of every owned worker: 200 ok, 503 degraded",
             response_model=HealthResponse,
             responses={503: {"model": HealthResponse,
                              "description": "Degraded: a thread is down or a worker reported an error (`errors`)."}})
    async def health(runtime: Runtime) -> JSONResponse:
        errors = {}
        if runtime.inference.error:
            errors["inference"] = runtime.inference.error
        if runtime.streams.error:
            errors["watchdog"] = runtime.streams.error
        if runtime.cues is not None and runtime.cues.error:
            errors["cues"] = runtime.cues.error
        for sid, worker in list(runtime.streams.workers.items()):
            if worker.error:
                errors[f"stream:{sid}"] = worker.error
        threads_ok = runtime.inference.alive and runtime.streams.alive
        # The same body either way; the status code is what a container health check reads, so a server
        # whose workers died is restarted instead of staying "healthy".
        degraded = not threads_ok or bool(errors)
        body = HealthResponse(
            status="degraded" if degraded else "ok",
            version=VERSION,
            uptime_s=time.time() - runtime.started_at,
            model=runtime.models.describe_active(),
            provider=runtime.models.active_provider,
            not_ready_reason=runtime.not_ready_reason(),
            threads=WorkerThreads(inference=runtime.inference.alive, watchdog=runtime.streams.alive),
            streams=runtime.streams.states(),
            errors=errors,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if degraded else 200)

    @app.get("/ready", summary="200 when a model is active and the pipeline runs, else 503 with the reason",
             response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "Not ready: `reason` says why."}})
    async def ready(runtime: Runtime) -> JSONResponse:
        reason = runtime.not_ready_reason()
        info = runtime.model_info()
        body = ReadyResponse(ready=reason is None, reason=reason, provider=runtime.models.active_provider,
                             model=None if info is None else ActiveModelInfo.model_validate(info),
                             streams=runtime.streams.states())
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if reason is None else 503)

    @app.get("/models", summary="Model packages in the models directory, each with whether it really loads",
             dependencies=reading, responses={**read_errors})
    def models(runtime: Runtime) -> ModelsResponse:
        active = runtime.models.active
        return ModelsResponse(models_dir=runtime.models.models_dir.name,
                              active=active.package.path.name if active else None,
                              models=[ModelPackageSummary.model_validate(row) for row in runtime.models.available()])

    @app.get("/models/active", summary="The active model, its provider and metadata summary", dependencies=reading,
             responses={**read_errors,
                        404: {"model": ErrorResponse, "description": "No model is active; `detail` says why."}})
    def active_model(runtime: Runtime) -> ActiveModelInfo:
        info = runtime.model_info()
        if info is None:
            raise HTTPException(404, detail=runtime.not_ready_reason())
        return ActiveModelInfo.model_validate(info)

    @app.put("/models/active", summary="Activate another model package (bearer token from ROHDE_ADMIN_TOKEN)",
             dependencies=[Depends(require_admin)],
             responses={
                 **unauthorized,
                 403: {"model": ErrorResponse, "description": "Model changes are disabled (no ROHDE_ADMIN_TOKEN)."},
                 400: {"model": ErrorResponse, "description": "The body cannot be parsed (not JSON)."},
                 413: {"model": ErrorResponse, "description": "The request body is over max_request_bytes."},
                 422: {"model": RequestRefused,
                       "description": "The package is refused (the previous model stays active), or the body is "
                                      "invalid."},
                 500: {"model": ErrorResponse, "description": "The model was activated but is not reported active."},
             })
    async def set_active_model(body: ActivateRequest, runtime: Runtime) -> ActiveModelInfo:
        try:
            active = await asyncio.to_thread(runtime.models.activate, body.name)
        except ModelPackageError as exc:
            raise HTTPException(422, detail=f"{exc} The previous model stays active.") from exc
        runtime.metrics.count_swap()
        meta = active.package.metadata
        runtime.hub.publish(StatusMessage(event="model_changed", server_time=time.time(), model_name=meta.name,
                                          model_version=meta.version, detail=f"generation {active.generation}"))
        info = runtime.model_info()
        if info is None:  # another request cannot deactivate a model, so this means a bug
            raise HTTPException(500, detail="The model was activated but is not reported active.")
        return ActiveModelInfo.model_validate(info)

    @app.get("/streams", summary="Every stream the server knows: state, reason, counters, per-channel quality",
             dependencies=reading, responses={**read_errors})
    async def streams(runtime: Runtime) -> StreamsResponse:
        return StreamsResponse(query=runtime.streams.query.describe(),
                               streams=[StreamSnapshot.model_validate(w.snapshot())
                                        for w in list(runtime.streams.workers.values())])

    disabled: dict[int | str, dict[str, Any]] = {
        403: {"model": ErrorResponse, "description": "Changes are disabled (no ROHDE_ADMIN_TOKEN)."}}
    add_alignment_routes(app, workers=lambda request: get_runtime(request).streams.workers, reading=reading,
                         read_errors=read_errors, admin=[Depends(require_admin)],
                         admin_errors={**unauthorized, **disabled})

    @app.get("/metrics", summary="Prometheus text exposition", response_class=PlainTextResponse,
             dependencies=reading,
             responses={**metrics_read_errors, 200: {"description": "Prometheus text format 0.0.4."}})
    async def metrics(runtime: Runtime) -> PlainTextResponse:
        return PlainTextResponse(runtime.metrics.render(runtime.streams.states(), shared_thread_backlogs()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/schema/messages", summary="JSON schemas of the WebSocket messages", dependencies=reading,
             responses={**read_errors})
    def message_schemas() -> MessageSchemas:
        return MessageSchemas(prediction=PredictionMessage.model_json_schema(),
                              status=StatusMessage.model_json_schema(), cue=CueMessage.model_json_schema())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, stream: Annotated[str | None, Query(max_length=256)] = None) -> None:
        runtime: ServerRuntime = websocket.app.state.runtime
        settings = runtime.settings
        refusal = websocket_refusal(websocket.headers, websocket.query_params, read_token=settings.read_token,
                                    admin_token=settings.admin_token, allowed_origins=settings.allowed_origins,
                                    own_address=websocket.scope.get("server"))
        if refusal is not None:  # before the handshake completes, as security.websocket_refusal says
            await websocket.close(WS_POLICY_VIOLATION, refusal)
            return
        await websocket.accept()
        if stream is not None and not await _wait_for_stream_id(runtime, stream):
            known = len(runtime.streams.known_ids())
            # A close reason is at most 123 bytes: the id itself (up to 256 characters) is not echoed.
            await websocket.close(WS_POLICY_VIOLATION,
                                  f"Unknown stream id; the server knows {known} stream id(s): see GET /streams.")
            return
        client = runtime.hub.register(stream)
        hello = StatusMessage(event="hello", server_time=time.time(), stream_id=stream,
                              detail=f"client {client.client_id}; model {runtime.models.describe_active()}",
                              model_name=(runtime.models.active.package.metadata.name if runtime.models.active
                                          else None))
        client.queue.append(hello.model_dump_json())
        receiver = asyncio.create_task(_drain_incoming(websocket))
        close: tuple[int, str] | None = None
        try:
            while True:
                # The receiver wins every tie: it can finish in the same loop turn as the getter (a frame sent
                # right after the handshake, while the hello is queued) or while a message is being sent, and
                # its answer (a close frame, or nothing for a client that left) must never be lost.
                if receiver.done():
                    close = receiver.result()
                    break
                getter = asyncio.create_task(runtime.hub.next_to_send(client))
                await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if receiver.done():
                    getter.cancel()  # a message it took is dropped: the connection closes now
                    close = receiver.result()
                    break
                text = getter.result()
                if text is None:  # the server is stopping: everything queued has been sent
                    close = (client.close_code or WS_GOING_AWAY, client.close_reason)
                    break
                await websocket.send_text(text)
                client.sent += 1
            if close is not None:
                await websocket.close(*close)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            runtime.hub.unregister(client)
            receiver.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await receiver

    return app


async def _wait_for_stream_id(runtime: ServerRuntime, stream_id: str) -> bool:
    """True once `stream_id` is a stream the server knows now or has known; False after
    `UNKNOWN_STREAM_WAIT_S` (a stream being found right now gets its id within a few watchdog scans)."""
    deadline = time.monotonic() + UNKNOWN_STREAM_WAIT_S
    while stream_id not in runtime.streams.known_ids():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(0.1, runtime.settings.resolve_interval_s))
    return True


async def _drain_incoming(websocket: WebSocket) -> tuple[int, str] | None:
    """Wait for what the client sends: None when it disconnects, else the close (code, reason) for a
    frame it should not have sent. The endpoint only sends, so any text or binary message is refused
    (with 1003) instead of being read and dropped, or dropping the connection without a close frame."""
    with suppress(WebSocketDisconnect, RuntimeError):
        message = await websocket.receive()
        if message["type"] == "websocket.receive":
            kind = "binary" if message.get("bytes") is not None else "text"
            return WS_UNSUPPORTED_DATA, f"This endpoint only sends; a {kind} message from the client is refused."
    return None


async def announce_shutdown(app: FastAPI) -> None:
    """Tell every WebSocket client that the server stops: a `server_stopping` status message, then a close
    frame 1001 once its queue is sent; waits up to `SHUTDOWN_NOTICE_S` for the handlers to finish.
    Idempotent; `rohde serve` calls it before uvicorn closes the connections, the lifespan again."""
    runtime: ServerRuntime | None = getattr(app.state, "runtime", None)
    if runtime is None:
        return
    hub = runtime.hub
    if not hub.closing:
        hub.publish(StatusMessage(event="server_stopping", server_time=time.time(),
                                  detail="The server is stopping; reconnect once it is back."))
        hub.close_all(WS_GOING_AWAY, "The server is stopping.")
    deadline = time.monotonic() + SHUTDOWN_NOTICE_S
    while hub.clients and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
