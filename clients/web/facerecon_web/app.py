"""The Starlette app: the page, the reconstruct endpoint and the mesh downloads.

GET  /                              the page (static/index.html)
GET  /api/config                    upload limits and the model being served
POST /api/reconstruct               body: the photo (Content-Type image/jpeg|png|webp|bmp);
                                    ?registration=1 also fits the service's face model
GET  /api/results/{id}/face.{kind}  kind: glb, ply, obj or textured_glb (the fitted head);
                                    kept result_ttl_s seconds
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from facerecon_client import AsyncFaceReconClient
from facerecon_web.errors import GatewayError, busy, from_rpc_error
from facerecon_web.headers import SecurityHeaders
from facerecon_web.replies import mesh_files, reply_json
from facerecon_web.settings import GatewaySettings
from facerecon_web.store import ResultStore
from facerecon_web.upload import ALLOWED_TYPES, read_photo

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# Failures that say nothing about the gateway's health (a bad photo, a busy service).
ROUTINE_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})
MEDIA_TYPES = {
    "glb": "model/gltf-binary",
    "ply": "application/octet-stream",
    "obj": "model/obj",
    "textured_glb": "model/gltf-binary",
}
FILE_NAMES = {kind: f"face.{kind}" for kind in MEDIA_TYPES} | {"textured_glb": "face_fitted.glb"}


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    """The gateway for `settings` (default: GatewaySettings.from_environ())."""
    settings = settings or GatewaySettings.from_environ()
    store = ResultStore(settings.result_ttl_s, settings.max_results, settings.max_result_bytes)
    # Uploads being read or reconstructed: each holds a photo in memory, so they are capped.
    inflight = 0

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One channel for all requests, opened on the event loop that serves them.
        # No waiting for readiness: the page answers at once (503 while the model loads).
        app.state.client = AsyncFaceReconClient(settings.service, ready_timeout_s=0)
        try:
            yield
        finally:
            await app.state.client.close()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def config(request: Request) -> Response:
        model, registration = None, False
        with contextlib.suppress(grpc.RpcError):
            info = await request.app.state.client.model_info(timeout=2.0)
            model = {"name": info.model.name, "version": info.model.version, "device": info.device}
            registration = "registration" in info.features
        return JSONResponse(
            {
                "max_upload_bytes": settings.max_upload_bytes,
                "allowed_types": list(ALLOWED_TYPES),
                "result_ttl_s": settings.result_ttl_s,
                "model": model,
                "registration": registration,  # the service has a face model to fit
            }
        )

    async def reconstruct(request: Request) -> Response:
        nonlocal inflight
        if inflight >= settings.max_inflight:
            raise busy()
        inflight += 1
        try:
            return await reconstruct_photo(request)
        finally:
            inflight -= 1

    async def reconstruct_photo(request: Request) -> Response:
        started = time.perf_counter()
        photo = await read_photo(request, settings.max_upload_bytes)
        registration = request.query_params.get("registration") == "1"
        try:
            reply = await request.app.state.client.reconstruct(
                photo,
                timeout=settings.timeout_s,
                mesh_encodings=("glb", "ply", "obj") + (("textured_glb",) if registration else ()),
                registration=registration,
                views=settings.views,
                view_size=settings.view_size,
                frontal_view=True,
                pose=True,
            )
        except grpc.RpcError as error:
            # The code only: details of INVALID_ARGUMENT can quote what the user sent.
            level = logging.INFO if error.code() in ROUTINE_CODES else logging.WARNING
            log.log(level, "Reconstruct failed: %s", error.code().name)
            raise from_rpc_error(error) from None
        files = mesh_files(reply)
        body = reply_json(reply, store.put(files), files)
        body["timings_ms"]["gateway_total"] = round((time.perf_counter() - started) * 1e3, 1)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def download(request: Request) -> Response:
        kind = request.path_params["kind"]
        data = store.get(request.path_params["result_id"], kind) if kind in MEDIA_TYPES else None
        if data is None:
            raise GatewayError(404, "This result has expired; please reconstruct the photo again.")
        return Response(
            data,
            media_type=MEDIA_TYPES[kind],
            headers={
                "Content-Disposition": f'attachment; filename="{FILE_NAMES[kind]}"',
                "Cache-Control": "no-store",
            },
        )

    async def gateway_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        content = {"error": error.message, "fields": error.fields}
        return JSONResponse(content, status_code=error.status, headers=error.headers)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/config", config),
            Route("/api/reconstruct", reconstruct, methods=["POST"]),
            Route("/api/results/{result_id}/face.{kind}", download),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={GatewayError: gateway_error},
        lifespan=lifespan,
    )
