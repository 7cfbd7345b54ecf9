"""The FastAPI application: `create_app(settings)`; the lifespan owns every resource.

Resources (model manager and ONNX session, stream workers and watchdog, inference thread, WebSocket
hub, decision marker outlet) are built on start-up in a `ServerRuntime`, handed to routes through a
typed dependency, and stopped in reverse order on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from rohde.core.errors import ModelPackageError
from rohde.core.version import VERSION
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
from rohde.server.hub import Hub
from rohde.server.inference import ModelManager
from rohde.server.inference_loop import InferenceLoop, Publisher
from rohde.server.jobs import JobQueue
from rohde.server.lsl_inlet import StreamQuery
from rohde.server.markers import DecisionMarkerOutlet
from rohde.server.messages import PredictionMessage, StatusEvent, StatusMessage
from rohde.server.metrics import ServerMetrics
from rohde.server.settings import ServerSettings
from rohde.server.stream_manager import StreamManager

logger = logging.getLogger(__name__)


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
        }


class ActivateRequest(BaseModel):
    name: str  # folder name of the package under the models directory


def get_runtime(request: Request) -> ServerRuntime:
    runtime: ServerRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[ServerRuntime, Depends(get_runtime)]


def _build_runtime(settings: ServerSettings, loop: asyncio.AbstractEventLoop) -> ServerRuntime:
    metrics = ServerMetrics()
    hub = Hub(queue_size=settings.ws_queue_size, on_drop=metrics.count_dropped)
    hub.bind(loop)
    models = ModelManager(settings.models_dir, providers=settings.providers)
    try:
        models.activate(settings.model)
    except ModelPackageError as exc:
        logger.error("Starting without a model (not ready): %s", exc)
    jobs = JobQueue(settings.inference_queue_size, metrics)

    def announce(event: StatusEvent, stream_id: str, detail: str, source_id: str | None) -> None:
        hub.publish_threadsafe(StatusMessage(event=event, server_time=time.time(), stream_id=stream_id,
                                             detail=detail, source_id=source_id))

    config = settings.ingest_config()
    query = StreamQuery(name=settings.stream_name, type=settings.stream_type, source_id=settings.stream_source_id)
    streams = StreamManager(query=query, models=models, jobs=jobs, metrics=metrics, config=config, announce=announce,
                            max_streams=settings.max_streams, resolve_interval_s=settings.resolve_interval_s)
    publishers: list[Publisher] = [hub.publish_threadsafe]
    markers = None
    if settings.marker_outlet:
        markers = DecisionMarkerOutlet(name=settings.marker_stream_name,
                                       source_id=f"rohde-decisions-{uuid.uuid4().hex[:8]}",
                                       lsl_config=settings.lsl_config)
        publishers.append(markers.publish)
    inference = InferenceLoop(jobs=jobs, models=models, metrics=metrics, publishers=publishers,
                              vote_k=settings.vote_k, confidence_threshold=settings.confidence_threshold,
                              max_batch=settings.max_batch)
    return ServerRuntime(settings=settings, models=models, metrics=metrics, hub=hub, streams=streams,
                         inference=inference, markers=markers)


def create_app(settings: ServerSettings) -> FastAPI:
    """The app for `settings`; resources are created by its lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await asyncio.to_thread(_build_runtime, settings, asyncio.get_running_loop())
        app.state.runtime = runtime
        runtime.inference.start()
        runtime.streams.start()
        logger.info("RoHDE server up: model %s, streams %s.", runtime.models.describe_active(),
                    runtime.streams.query.describe())
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.streams.stop)
            await asyncio.to_thread(runtime.inference.stop)
            if runtime.markers is not None:
                runtime.markers.close()
            logger.info("RoHDE server stopped.")

    app = FastAPI(
        title="RoHDE gesture server",
        version=VERSION,
        description=(
            "Real-time gesture recognition from HD-EMG LSL streams. Decisions are pushed on the WebSocket "
            "`/ws` as JSON `PredictionMessage`s (and `StatusMessage`s for stream and model events); the "
            "REST routes report health, readiness, models, streams and Prometheus metrics."
        ),
        lifespan=lifespan,
    )

    @app.get("/health", summary="Liveness and errors of every owned worker")
    def health(runtime: Runtime) -> HealthResponse:
        errors = {}
        if runtime.inference.error:
            errors["inference"] = runtime.inference.error
        if runtime.streams.error:
            errors["watchdog"] = runtime.streams.error
        for sid, worker in list(runtime.streams.workers.items()):
            if worker.error:
                errors[f"stream:{sid}"] = worker.error
        threads_ok = runtime.inference.alive and runtime.streams.alive
        return HealthResponse(
            status="ok" if threads_ok and not errors else "degraded",
            version=VERSION,
            uptime_s=time.time() - runtime.started_at,
            model=runtime.models.describe_active(),
            not_ready_reason=runtime.not_ready_reason(),
            threads=WorkerThreads(inference=runtime.inference.alive, watchdog=runtime.streams.alive),
            streams=runtime.streams.states(),
            errors=errors,
        )

    @app.get("/ready", summary="200 when a model is active and the pipeline runs, else 503 with the reason",
             response_model=ReadyResponse,
             responses={503: {"model": ReadyResponse, "description": "Not ready: `reason` says why."}})
    def ready(runtime: Runtime) -> JSONResponse:
        reason = runtime.not_ready_reason()
        info = runtime.model_info()
        body = ReadyResponse(ready=reason is None, reason=reason,
                             model=None if info is None else ActiveModelInfo.model_validate(info),
                             streams=runtime.streams.states())
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if reason is None else 503)

    @app.get("/models", summary="Model packages in the models directory")
    def models(runtime: Runtime) -> ModelsResponse:
        active = runtime.models.active
        return ModelsResponse(models_dir=str(runtime.models.models_dir),
                              active=active.package.path.name if active else None,
                              models=[ModelPackageSummary.model_validate(row) for row in runtime.models.available()])

    @app.get("/models/active", summary="The active model, its provider and metadata summary",
             responses={404: {"model": ErrorResponse, "description": "No model is active; `detail` says why."}})
    def active_model(runtime: Runtime) -> ActiveModelInfo:
        info = runtime.model_info()
        if info is None:
            raise HTTPException(404, detail=runtime.not_ready_reason())
        return ActiveModelInfo.model_validate(info)

    @app.put("/models/active", summary="Activate another model package (bearer token from ROHDE_ADMIN_TOKEN)",
             responses={
                 401: {"model": ErrorResponse, "description": "The bearer token is missing or wrong.",
                       "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}},
                 403: {"model": ErrorResponse, "description": "Model changes are disabled (no ROHDE_ADMIN_TOKEN)."},
                 422: {"model": RequestRefused,
                       "description": "The package is refused (the previous model stays active), or the body is "
                                      "invalid."},
                 500: {"model": ErrorResponse, "description": "The model was activated but is not reported active."},
             })
    async def set_active_model(body: ActivateRequest, runtime: Runtime,
                               authorization: Annotated[str | None, Header()] = None) -> ActiveModelInfo:
        token = runtime.settings.admin_token
        if not token:
            raise HTTPException(403, detail="Model changes are disabled: the server has no ROHDE_ADMIN_TOKEN.")
        if authorization != f"Bearer {token}":
            raise HTTPException(401, detail="A valid 'Authorization: Bearer <token>' header is required.",
                                headers={"WWW-Authenticate": "Bearer"})
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

    @app.get("/streams", summary="Every stream the server knows: state, reason, counters, per-channel quality")
    def streams(runtime: Runtime) -> StreamsResponse:
        return StreamsResponse(query=runtime.streams.query.describe(),
                               streams=[StreamSnapshot.model_validate(w.snapshot())
                                        for w in list(runtime.streams.workers.values())])

    @app.get("/metrics", summary="Prometheus text exposition", response_class=PlainTextResponse,
             responses={200: {"description": "Prometheus text format 0.0.4."}})
    def metrics(runtime: Runtime) -> PlainTextResponse:
        return PlainTextResponse(runtime.metrics.render(runtime.streams.states()),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/schema/messages", summary="JSON schemas of the WebSocket messages")
    def message_schemas() -> MessageSchemas:
        return MessageSchemas(prediction=PredictionMessage.model_json_schema(),
                              status=StatusMessage.model_json_schema())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, stream: Annotated[str | None, Query()] = None) -> None:
        runtime: ServerRuntime = websocket.app.state.runtime
        await websocket.accept()
        client = runtime.hub.register(stream)
        hello = StatusMessage(event="hello", server_time=time.time(), stream_id=stream,
                              detail=f"client {client.client_id}; model {runtime.models.describe_active()}",
                              model_name=(runtime.models.active.package.metadata.name if runtime.models.active
                                          else None))
        client.queue.append(hello.model_dump_json())
        receiver = asyncio.create_task(_drain_incoming(websocket))
        try:
            while not receiver.done():
                getter = asyncio.create_task(runtime.hub.next_message(client))
                done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send_text(getter.result())
                client.sent += 1
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            runtime.hub.unregister(client)
            receiver.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await receiver

    return app


async def _drain_incoming(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed at once."""
    with suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
