"""`cgdeploy serve`: a thin wrapper over scale/serve.py (Ray Serve, imported inside the body). Runs in the
foreground until Ctrl-C or SIGTERM (cli.py delivers both as an interrupt), then stops Serve and Ray."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cyclegan_deploy.commands.options import (
    ADDRESS,
    BACKEND,
    CHECKPOINT,
    DEVICE,
    ENGINE,
    MODEL,
    PRECISION,
    TILE,
    TILE_OVERLAP,
    resolve_artifact,
)

THREADS = typer.Option(None, "--threads", min=1, help="CPU threads per replica (default: the CPUs Ray has, shared "
                                                      "out between the replicas).")
HOST = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default; 0.0.0.0 exposes the "
                                                "model to the network).")
PORT = typer.Option(8000, "--port", min=1, max=65535, help="HTTP port.")
REPLICAS = typer.Option(1, "--replicas", min=1, help="Model replicas (each loads the model once).")
MAX_BATCH = typer.Option(8, "--max-batch", min=1, help="Concurrent requests grouped into one model call (one call "
                                                       "per image size); 1 = no batching.")
BATCH_WAIT = typer.Option(10.0, "--batch-wait-ms", min=0.0, help="How long a batch waits to fill.")
NO_BATCHING = typer.Option(False, "--no-batching", help="Same as --max-batch 1: each request is its own model call.")
MAX_BODY = typer.Option(20.0, "--max-body-mb", min=0.001, help="Largest request body in MiB; larger: 413.")
MAX_PIXELS = typer.Option(1920 * 1920, "--max-pixels", min=4, help="Largest image in pixels (width x height, read "
                                                                   "from its header before decoding); larger: 413.")
TIMEOUT = typer.Option(60.0, "--timeout", min=0.001, help="Seconds a request may take in a replica; longer: 504.")
MAX_ONGOING = typer.Option(None, "--max-ongoing", min=1, help="Requests one replica holds at once (default: 16, or "
                                                              "2 x --max-batch if more).")
MAX_QUEUED = typer.Option(32, "--max-queued", min=0, help="Requests waiting for a replica; beyond: 503.")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        engine: Path | None = ENGINE,
        model: Path | None = MODEL,
        checkpoint: Path | None = CHECKPOINT,
        backend: str = BACKEND,
        device: str = DEVICE,
        precision: str | None = PRECISION,
        threads: int | None = THREADS,
        host: str = HOST,
        port: int = PORT,
        replicas: int = REPLICAS,
        max_batch: int = MAX_BATCH,
        batch_wait_ms: float = BATCH_WAIT,
        no_batching: bool = NO_BATCHING,
        max_body_mb: float = MAX_BODY,
        max_pixels: int = MAX_PIXELS,
        timeout: float = TIMEOUT,
        max_ongoing: int | None = MAX_ONGOING,
        max_queued: int = MAX_QUEUED,
        address: str | None = ADDRESS,
        tile: int | None = TILE,
        tile_overlap: int = TILE_OVERLAP,
    ) -> None:
        """Serve the model over HTTP (Ray Serve): POST /translate an image, GET /healthz, /model, /stats."""
        from cyclegan_deploy.scale.serve import ServeOptions, start_server, stop_server

        artifact = resolve_artifact(engine, model, checkpoint)
        opts = ServeOptions(host=host, port=port, replicas=replicas, max_batch=1 if no_batching else max_batch,
                            batch_wait_ms=batch_wait_ms, max_body_bytes=int(max_body_mb * (1 << 20)),
                            max_pixels=max_pixels, timeout_s=timeout, max_ongoing=max_ongoing, max_queued=max_queued,
                            address=address, backend=backend, device=device, precision=precision, threads=threads,
                            tile=tile, tile_overlap=tile_overlap)
        server = start_server(artifact, opts)
        try:
            batching = (f"batches of up to {opts.max_batch} ({opts.batch_wait_ms:g} ms wait)" if opts.max_batch > 1
                        else "no batching")
            each = f" x {server.threads} thread(s)" if server.threads else ""
            typer.echo(f"serving {artifact} with {server.backend}, {server.replicas} replica(s){each}, {batching}")
            where = " on the cluster's proxy node(s)" if address else ""
            typer.echo(f"ready: {server.url}{where}  (POST /translate, GET /healthz /model /stats; Ctrl-C to stop)")
            while True:  # the interrupt (Ctrl-C, or SIGTERM via cli.py) lands here
                time.sleep(3600)
        finally:
            stop_server()
