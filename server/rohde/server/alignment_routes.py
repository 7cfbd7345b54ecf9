"""The alignment routes: read one stream's live alignment, re-estimate it on request, switch it off.

`GET /streams/{stream_id}/alignment` reads (read token where the server has one);
`POST` (collect again and re-estimate) and `DELETE` (windows pass unchanged) change how a stream's
windows reach the model, so they need the admin token, as `PUT /models/active` does. The app passes
its dependencies in, so this module needs nothing from `rohde.server.app`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Request

from rohde.server.api_models import ErrorResponse, StreamAlignmentReport
from rohde.server.stream_worker import StreamWorker

StreamId = Annotated[str, Path(max_length=256, description="The stream's id, as GET /streams lists it.")]


def add_alignment_routes(app: FastAPI, *, workers: Callable[[Request], Mapping[str, StreamWorker]],
                         reading: Sequence[Any], read_errors: dict[int | str, dict[str, Any]],
                         admin: Sequence[Any], admin_errors: dict[int | str, dict[str, Any]]) -> None:
    """Register the three routes; `reading` / `admin` are the dependencies guarding reads and changes."""
    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "No stream with this id is served now."}}

    def worker(request: Request, stream_id: str) -> StreamWorker:
        found = workers(request).get(stream_id)
        if found is None:
            known = len(workers(request))
            raise HTTPException(404, detail=f"No stream with this id is served now ({known} are); see GET /streams.")
        return found

    @app.get("/streams/{stream_id}/alignment", summary="The stream's label-free alignment to the model's grid",
             dependencies=list(reading), responses={**read_errors, **not_found})
    def get_alignment(request: Request, stream_id: StreamId) -> StreamAlignmentReport:
        return StreamAlignmentReport.model_validate(worker(request, stream_id).alignment.snapshot())

    @app.post("/streams/{stream_id}/alignment",
              summary="Collect the stream's first seconds again and re-estimate its alignment (admin token)",
              description="From the next window on, the stream's filtered signal is collected for "
                          "`alignment_warmup_s` seconds (rest and a few movements, no labels), then the grid's "
                          "shift and gain are estimated against the model's reference and applied. Windows pass "
                          "unchanged meanwhile. Also switches alignment on for a stream where it was off.",
              dependencies=list(admin), responses={**admin_errors, **not_found})
    def restart_alignment(request: Request, stream_id: StreamId) -> StreamAlignmentReport:
        alignment = worker(request, stream_id).alignment
        alignment.restart()
        return StreamAlignmentReport.model_validate(alignment.snapshot())

    @app.delete("/streams/{stream_id}/alignment",
                summary="Switch the stream's alignment off: its windows pass unchanged (admin token)",
                dependencies=list(admin), responses={**admin_errors, **not_found})
    def disable_alignment(request: Request, stream_id: StreamId) -> StreamAlignmentReport:
        alignment = worker(request, stream_id).alignment
        alignment.disable()
        return StreamAlignmentReport.model_validate(alignment.snapshot())
