"""FaceReconService: the request pipeline behind Reconstruct, ReconstructStream, GetModelInfo.

One request: parse -> admission (a slot charged with the request's estimated memory, or
RESOURCE_EXHAUSTED) -> prepare (decode, crop; CPU pool) -> network (dynamic batcher) ->
finish (mesh, pose, views; CPU pool) -> encode (mesh files, view images; CPU pool). Before
every stage the call is checked: work for a client that has gone or whose deadline has passed
is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import grpc
import numpy as np

from facerecon.errors import FeatureUnavailable, InputError
from facerecon.pose import Pose
from facerecon.reconstructor import (
    MAX_VIEWS,
    POSE_ONLY,
    VIEW_SIZES,
    PreparedFace,
    Reconstructor,
)
from facerecon.server import convert
from facerecon.server.admission import Admission, Slot
from facerecon.server.batcher import DynamicBatcher
from facerecon.server.config import ServerConfig
from facerecon.server.cost import request_cost
from facerecon.server.metrics import ServerMetrics
from facerecon.server.status import RpcFailure, abort, bad_request, failure
from facerecon.v1 import service_pb2 as pb
from facerecon.v1 import service_pb2_grpc
from facerecon.v1 import types_pb2 as types

log = logging.getLogger(__name__)
# what a face model (--face-model) adds: ReconstructOptions.registration and what uses it
REGISTRATION_FEATURES = ["registration", "mesh_textured_glb", "mesh_textured_obj",
                         "registered_views"]  # fmt: skip


@dataclass
class Engine:
    """What the service needs once the model is loaded."""

    reconstructor: Reconstructor
    batcher: DynamicBatcher[PreparedFace, np.ndarray]


class FaceReconService(service_pb2_grpc.FaceReconServiceServicer):
    def __init__(self, config: ServerConfig, metrics: ServerMetrics, pool: ThreadPoolExecutor):
        self.config = config
        self.metrics = metrics
        self.pool = pool
        # the budget is set again once the model is loaded (app.py: from the memory left)
        self.admission = Admission(config.max_inflight, 1 << 62, metrics)
        self.engine: Engine | None = None  # set once the model is loaded and warm
        self.draining = False  # set on shutdown: new requests are refused
        self.preparing = 0  # requests being decoded and cropped
        self._readers: set[asyncio.Task] = set()  # each open stream's request reader

    async def Reconstruct(
        self, request: pb.ReconstructRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconstructResponse:
        try:
            engine = self._ready()
            parsed, cost = self._parse(engine, request, request.request_id)
            slot = self.admission.try_enter(cost)
            if isinstance(slot, str):
                raise failure(grpc.StatusCode.RESOURCE_EXHAUSTED, slot)
            try:
                return await self._reconstruct(engine, parsed, slot, context)
            finally:
                slot.close()
        except RpcFailure as error:
            await abort(context, error.status)

    async def ReconstructStream(
        self,
        requests: AsyncIterator[pb.ReconstructStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ReconstructStreamResponse]:
        try:
            engine = self._ready()
        except RpcFailure as error:
            await abort(context, error.status)
        window = asyncio.Semaphore(self.config.max_stream_inflight)
        replies: asyncio.Queue[pb.ReconstructStreamResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def answer(parsed: convert.ParsedRequest, slot: Slot) -> None:
            request_id = parsed.request_id
            try:
                response = await self._reconstruct(engine, parsed, slot, context)
                reply = pb.ReconstructStreamResponse(request_id=request_id, response=response)
            except RpcFailure as error:
                reply = pb.ReconstructStreamResponse(request_id=request_id, error=error.status)
            finally:
                slot.close()
            replies.put_nowait(reply)

        async def read_all() -> None:
            # The next request is read only once this stream has a free window place (given
            # back when a reply has been sent), and it starts once the server has a free slot:
            # the backlog stays in the client and the transport, never here. When the server
            # drains (end_streams), reading stops and the requests in progress are answered.
            index = 0
            incoming = aiter(requests)
            held = 0  # window places taken by this loop that no request has used
            try:
                try:
                    while True:
                        await window.acquire()
                        held = 1
                        message = await anext(incoming, None)
                        if message is None:
                            break
                        request_id = message.request.request_id or str(index)
                        index += 1
                        try:
                            if self.draining:
                                self._ready()  # refused in-band: the server is shutting down
                            parsed, cost = self._parse(engine, message.request, request_id)
                        except RpcFailure as error:  # refused before any work: answered now
                            held = 0
                            replies.put_nowait(
                                pb.ReconstructStreamResponse(
                                    request_id=request_id, error=error.status
                                )
                            )
                            continue
                        try:
                            slot = await self.admission.enter(cost)
                        except asyncio.CancelledError:
                            if not self.draining:
                                raise
                            held = 0
                            status = failure(
                                grpc.StatusCode.UNAVAILABLE, "server is shutting down"
                            ).status
                            replies.put_nowait(
                                pb.ReconstructStreamResponse(request_id=request_id, error=status)
                            )
                            raise
                        held = 0
                        task = asyncio.create_task(answer(parsed, slot))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except asyncio.CancelledError:
                    if not self.draining:
                        raise
                # until every request read is answered
                for _ in range(self.config.max_stream_inflight - held):
                    await window.acquire()
            finally:
                replies.put_nowait(None)

        reader = asyncio.create_task(read_all())
        self._readers.add(reader)
        try:
            while (reply := await replies.get()) is not None:
                yield reply
                window.release()
            await reader  # re-raises a transport error from reading
        finally:
            self._readers.discard(reader)
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    def end_streams(self) -> None:
        """Draining: streams stop reading requests; those in progress are still answered."""
        for reader in list(self._readers):
            reader.cancel()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        try:
            engine = self._ready()
        except RpcFailure as error:
            await abort(context, error.status)
        info = engine.reconstructor.info
        c = self.config
        features = [
            "mesh_raw",
            "mesh_glb",
            "mesh_ply",
            "mesh_obj",
            "views_png",
            "views_jpeg",
            "face_box",
            "landmarks_5",
            "landmarks_68",
            "pose",
            "frontal_view",
            "chips",
            "visibility",
            "pose_match",
        ]
        if engine.reconstructor.detector is not None:
            features.append("face_detector")
        if engine.reconstructor.predicts_landmarks:
            features.append("predicted_landmarks_68")
        if engine.reconstructor.face_model is not None:
            features += REGISTRATION_FEATURES
        return pb.GetModelInfoResponse(
            model=types.ModelVersion(name=info.variant, version=info.version),
            weights_sha256=info.sha256,
            parameters=info.parameters,
            input_size=info.input_size,
            volume_slices=info.slices,
            device=info.device,
            limits=pb.Limits(
                max_receive_message_bytes=c.max_receive_message_bytes,
                max_send_message_bytes=c.max_send_message_bytes,
                max_inflight_requests=c.max_inflight,
                max_stream_inflight=c.max_stream_inflight,
                max_batch_size=c.max_batch_size,
                batch_max_wait_ms=c.batch_max_wait_ms,
                max_image_pixels=engine.reconstructor.max_pixels,
                max_views=MAX_VIEWS,
                min_view_size=VIEW_SIZES[0],
                max_view_size=VIEW_SIZES[1],
                memory_budget_bytes=self.admission.budget,
            ),
            features=features,
        )

    def _ready(self) -> Engine:
        if self.draining:
            self.metrics.rejected.labels("shutting_down").inc()
            raise failure(grpc.StatusCode.UNAVAILABLE, "server is shutting down")
        if self.engine is None:
            self.metrics.rejected.labels("not_ready").inc()
            raise failure(grpc.StatusCode.UNAVAILABLE, "model is loading; retry shortly")
        return self.engine

    def _parse(
        self, engine: Engine, request: pb.ReconstructRequest, request_id: str
    ) -> tuple[convert.ParsedRequest, int]:
        """The request checked (before any work is queued) and its estimated memory cost."""
        try:
            parsed = convert.parse_request(request, request_id)
            engine.reconstructor.check_available(parsed.options)
        except InputError as error:
            raise bad_request(error) from None
        except FeatureUnavailable as error:  # the server lacks it: the message says how to add it
            raise failure(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        cost = request_cost(parsed, engine.reconstructor.max_pixels)
        refusal = self.admission.over_budget(cost)
        if refusal is not None:
            raise failure(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        return parsed, cost

    async def _reference_pose(
        self, engine: Engine, data: bytes, slot: Slot, context: grpc.aio.ServicerContext
    ) -> Pose:
        """The head pose in a request's pose-reference photo (prepare, batch, pose only);
        its input errors name that field."""
        rec = engine.reconstructor
        try:
            face = await slot.run(self.pool, rec.prepare, data)
            _check_alive(context)
            volume = await engine.batcher.submit(face, slot.hold())
            _check_alive(context)
            result = await slot.run(self.pool, rec.finish, face, volume, POSE_ONLY)
        except InputError as error:
            raise InputError(
                f"pose reference image: {error.message}", field="options.pose_reference_image"
            ) from None
        return result.pose

    async def _reconstruct(
        self,
        engine: Engine,
        parsed: convert.ParsedRequest,
        slot: Slot,
        context: grpc.aio.ServicerContext,
    ) -> pb.ReconstructResponse:
        start = time.perf_counter()
        rec = engine.reconstructor
        request_id = parsed.request_id
        try:
            _check_alive(context)
            self.preparing += 1  # on its way to the batcher, which may wait for it
            try:
                face = await slot.run(
                    self.pool, rec.prepare, parsed.image, parsed.face_box, parsed.landmarks
                )
            finally:
                self.preparing -= 1
            _check_alive(context)
            queued = time.perf_counter()
            volume = await engine.batcher.submit(face, slot.hold())
            waited_ms = (time.perf_counter() - queued) * 1000.0
            face.timings_ms["queue"] = max(0.0, waited_ms - face.timings_ms.get("network", 0.0))
            _check_alive(context)
            options = parsed.options
            if parsed.pose_reference is not None:
                target = await self._reference_pose(engine, parsed.pose_reference, slot, context)
                options = replace(options, target_pose=target)
            result = await slot.run(self.pool, rec.finish, face, volume, options)
            del volume  # 30 MB: let it go before encoding
            _check_alive(context)
            encoded = time.perf_counter()
            response = await slot.run(self.pool, convert.build_response, result, parsed)
        except InputError as error:
            raise bad_request(error) from None
        except FeatureUnavailable as error:  # the server lacks it: the message says how to add it
            raise failure(grpc.StatusCode.FAILED_PRECONDITION, str(error)) from None
        except RpcFailure:
            raise
        except Exception:  # a bug, not the client's fault: log it (never the request's data)
            log.exception("reconstruction failed", extra={"fields": {"request_id": request_id}})
            raise failure(
                grpc.StatusCode.INTERNAL, "internal error; the server logged it"
            ) from None
        size, limit = response.ByteSize(), self.config.max_send_message_bytes
        if size > limit:  # say why, rather than let the transport fail the call
            raise failure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the reply would be {size / 2**20:.1f} MiB, over this server's limit of "
                f"{limit / 2**20:.1f} MiB: ask for fewer mesh encodings or smaller views, or "
                "set options.decimate_faces",
            )
        timings = dict(result.timings_ms)
        timings["encode"] = (time.perf_counter() - encoded) * 1000.0
        timings["total"] = (time.perf_counter() - start) * 1000.0
        response.timings_ms.update(timings)
        self.metrics.observe_stages(timings)
        return response


def _check_alive(context: grpc.aio.ServicerContext) -> None:
    """Stop before the next stage when the caller's deadline has passed."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the work was done")
