"""The Ray Serve deployment behind `cgdeploy serve`: each replica loads the backend once (in __init__) and answers
POST /translate, GET /healthz, GET /model (the model card) and GET /stats (this replica's batching counters).

Concurrent /translate requests meet in @serve.batch: one batch is one list of decoded images, run as one backend
call per distinct size (frames of different sizes cannot share an array), memory permitting. The model runs on
one worker thread, so the event loop keeps accepting, decoding and encoding while it computes, and the next
batch fills up meanwhile. Everything a request may refuse is in http_limits.py; this module is the Ray side.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from cyclegan_deploy import machine
from cyclegan_deploy.errors import CgDeployError
from cyclegan_deploy.frames import crop, from_model, model_size, pad_to_model, to_model
from cyclegan_deploy.model_checks import (
    all_finite,
    bytes_per_pixel,
    check_output,
    model_label,
    non_finite_error,
    run_failure,
)
from cyclegan_deploy.scale.http_limits import (
    HttpError,
    check_length,
    decode,
    encode,
    image_format,
    read_body,
    reply_type,
)
from cyclegan_deploy.video.probe import one_line

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend
    from cyclegan_deploy.scale.serve import ServeOptions

logger = logging.getLogger("ray.serve")
MEMORY_SHARE = 0.5  # of the available memory one backend call may take (decode/encode of other requests go on)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data).encode(), status_code=status, media_type="application/json")


@serve.deployment
class Translator:
    def __init__(self, opts: ServeOptions) -> None:
        from PIL import Image

        from cyclegan_deploy.scale.serve import open_backend

        self.opts = opts
        # One replica is one process: PIL's own bomb limit can be the server's without touching anyone else
        Image.MAX_IMAGE_PIXELS = opts.max_pixels
        self.backend: Backend = open_backend(opts)
        self.label = model_label(self.backend, opts.artifact)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cgdeploy-model")  # one call at a time: it has the CPUs
        # serve.batch's wrapper has these setters; its annotations give it a plain callable's type
        self._batched.set_max_batch_size(opts.max_batch)  # type: ignore[attr-defined]
        self._batched.set_batch_wait_timeout_s(opts.batch_wait_ms / 1000)  # type: ignore[attr-defined]
        # Requests join the batch queue only while the model is idle. Serve forms a batch from what arrives within
        # the wait and queues it behind the running one, so under load batches stayed small (ResNet-9, 16 clients,
        # --max-batch 8: 3 on average); held here, the requests that arrived during a call form the next batch.
        self._model_idle = asyncio.Event()
        self._model_idle.set()
        self.good_calls = 0
        self.stats: dict[str, Any] = {"replica": os.getpid(), "backend": self.backend.name,
                                      "threads": self.backend.threads, "max_batch": opts.max_batch, "requests": 0,
                                      "batches": Counter(), "backend_calls": Counter(), "mixed_size_batches": 0}

    async def __call__(self, request: Request) -> Response:
        # Serve hands over the full path with the app's route prefix as root_path
        path = request.url.path[len(request.scope.get("root_path", "")):].rstrip("/") or "/"
        routes = {"/translate": "POST", "/healthz": "GET", "/model": "GET", "/stats": "GET"}
        try:
            if path not in routes:
                raise HttpError(404, f"no route {path}; use POST /translate, GET /healthz, /model or /stats")
            if request.method != routes[path]:
                raise HttpError(405, f"{path} takes {routes[path]}, not {request.method}")
            if path == "/healthz":
                return json_response({"status": "ok"})
            if path == "/model":
                return json_response(asdict(self.backend.meta))
            if path == "/stats":
                return json_response(self.stats)
            try:
                return await asyncio.wait_for(self._translate(request), self.opts.timeout_s)
            except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                raise HttpError(504, f"not translated within {self.opts.timeout_s:g} s (the server's --timeout); "
                                     "retry later or send a smaller image") from None
        except HttpError as e:
            return json_response({"error": e.message}, e.status)
        except Exception as e:  # a bug of ours: the traceback goes to the replica's log, one line to the client
            logger.exception("request failed")
            return json_response({"error": f"internal error ({type(e).__name__}: {one_line(e)[:200]})"}, 500)

    async def _translate(self, request: Request) -> Response:
        fmt = image_format(request.headers.get("content-type"))
        check_length(request.headers.get("content-length"), self.opts.max_body_bytes)
        data = await read_body(request.stream(), self.opts.max_body_bytes)
        image = await asyncio.to_thread(decode, data, fmt, self.opts.max_pixels)
        self._check_memory(*image.rgb.shape[:2])
        if self.opts.max_batch > 1:
            await self._model_idle.wait()
            out = await self._batched(image.rgb)
        else:  # --no-batching: straight to the model thread, no batch queue or wait
            out = (await asyncio.get_running_loop().run_in_executor(self.pool, self._run, [image.rgb]))[0]
        if isinstance(out, Exception):
            raise HttpError(500, str(out))
        body = await asyncio.to_thread(encode, out, image.alpha, fmt)
        self.stats["requests"] += 1
        return Response(body, media_type=reply_type(fmt))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # both set per server in __init__
    async def _batched(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        self._model_idle.clear()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, images)
        finally:
            self._model_idle.set()

    def _image_bytes(self, h: int, w: int) -> int:
        ph, pw = model_size(h, w, self.backend.meta)
        return bytes_per_pixel(self.backend.meta, self.backend.device) * ph * pw

    def _check_memory(self, h: int, w: int) -> None:
        free = machine.available_memory()
        if free is not None and self._image_bytes(h, w) > free * MEMORY_SHARE:
            raise HttpError(413, f"image {h}x{w} (HxW) needs ~{machine.gib(self._image_bytes(h, w))} GiB to "
                                 f"translate, the server has {machine.gib(free)} GiB available; shrink it first")

    def _run(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Outputs (sH, sW, 3) uint8 in the order of `images`: one backend call per size (split where memory
        asks), a failing call's exception in its images' places, the others still answered."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            by_size.setdefault((rgb.shape[0], rgb.shape[1]), []).append(i)
        self.stats["batches"][len(images)] += 1
        self.stats["mixed_size_batches"] += len(by_size) > 1
        free = machine.available_memory()
        out: list[np.ndarray | Exception] = [RuntimeError("not run")] * len(images)
        for (h, w), idx in by_size.items():
            per_call = len(idx) if free is None else max(1, int(free * MEMORY_SHARE) // self._image_bytes(h, w))
            for start in range(0, len(idx), per_call):
                part = idx[start:start + per_call]
                try:
                    results: list[np.ndarray | Exception] = list(self._run_same_size([images[i] for i in part]))
                except Exception as e:
                    results = [e] * len(part)
                for i, result in zip(part, results, strict=True):
                    out[i] = result
        return out

    def _run_same_size(self, images: list[np.ndarray]) -> np.ndarray:
        meta, name = self.backend.meta, self.backend.name
        h, w = images[0].shape[:2]
        x = pad_to_model(to_model(np.stack(images), meta.input_range), model_size(h, w, meta))  # (N, 3, H', W')
        try:
            y = self.backend(x)  # (N, 3, s*H', s*W')
        except CgDeployError as e:
            raise type(e)(f"{self.label}: {e}") from e
        except Exception as e:
            raise run_failure(e, self.label, name, x.shape, self.good_calls) from e
        check_output(y, x.shape, meta, self.label, name)
        if not all_finite(y):
            raise non_finite_error(self.label, f"a {h}x{w} image")
        self.good_calls += 1
        self.stats["backend_calls"][len(images)] += 1
        return from_model(crop(y, h, w, meta.scale), meta.output_range)  # (N, sH, sW, 3) uint8

    def __del__(self) -> None:  # Serve calls it when the replica stops; __init__ may have failed half-way
        if hasattr(self, "pool"):
            self.pool.shutdown(wait=False)
        if hasattr(self, "backend"):
            self.backend.close()
