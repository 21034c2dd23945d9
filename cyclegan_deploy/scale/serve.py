"""`cgdeploy serve` as a library: start_server(artifact, opts) -> ServerHandle, stop_server().

One server per process. start_server checks what it can before Ray starts (the numbers, the port, the model:
opened once here so a bad file is a typed one-line error, not a replica crash-looping), then starts a local Ray
instance (or joins --address), Serve's HTTP proxy on host:port, and the Translator deployment (serve_app.py),
and returns once /healthz answers. Overload is Serve's own back-pressure: each replica takes max_ongoing
requests, the proxy queues max_queued more and answers 503 beyond that (verified with Ray 2.60 in the tests).
stop_server undoes what start_server did: a local instance goes entirely; on a joined cluster our app is deleted
(and Serve shut down if no other app runs there) and the driver disconnects, the cluster itself runs on.
Ray is imported inside functions; nothing in the core runtime imports this module.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclegan_deploy import machine
from cyclegan_deploy.errors import BackendUnavailableError, ConfigError
from cyclegan_deploy.model_checks import check_generator, model_label

if TYPE_CHECKING:
    from cyclegan_deploy.backends import Backend

APP_NAME = "cgdeploy"
READY_TIMEOUT_S = 60.0  # replicas loading a large model on a busy machine
DRAIN_S = 5.0  # on stop, requests in flight get this long to finish


@dataclass(frozen=True)
class ServeOptions:
    artifact: str = ""  # the model file; start_server sets it
    host: str = "127.0.0.1"  # loopback: exposing a model server to the network is the caller's choice
    port: int = 8000
    replicas: int = 1
    max_batch: int = 8  # 1 = no batching (requests go straight to the model thread)
    # How long the first request of a batch waits for company: ~1% of a 256x256 ResNet-9 call on 2 CPU cores
    batch_wait_ms: float = 10.0
    max_body_bytes: int = 20 << 20
    max_pixels: int = 1920 * 1920  # 1080p either way up; a CPU ResNet-9 needs ~8 GB of activations for it
    timeout_s: float = 60.0  # per request, inside the replica (read, decode, batch wait, model, encode)
    max_ongoing: int | None = None  # per replica; None: ongoing (below)
    max_queued: int = 32  # waiting for a replica, per proxy; beyond it the proxy answers 503
    address: str | None = None  # None: a new local Ray instance; "auto" or "ray://host:10001": join that cluster
    backend: str = "auto"
    device: str = "auto"
    precision: str | None = None
    threads: int | None = None  # per replica; None: the CPUs Ray has, shared out between the replicas
    tile: int | None = None  # run the model on tiles of this many pixels (tiling.TiledBackend); None: whole images
    tile_overlap: int = 16
    opener: Callable[[], Backend] | None = None  # tests/embedders: builds the backend in each replica (picklable)

    @property
    def ongoing(self) -> int:
        """Requests a replica holds: at least 2 batches, so one fills while another runs, and at least 16: the
        replica queues for its model thread in order at no cost, while requests Serve's proxy holds back are
        re-offered with back-off (at 2 per replica, 16 clients got a quarter of 1 client's throughput)."""
        return self.max_ongoing if self.max_ongoing is not None else max(16, 2 * self.max_batch)


@dataclass(frozen=True)
class ServerHandle:
    url: str
    backend: str  # what runs, e.g. onnxruntime-cpu
    replicas: int
    threads: int | None
    options: ServeOptions
    ray_mode: str  # "local": we started Ray (and Serve), stop shuts both down; "joined": we connected to a cluster,
    #                stop removes our app and disconnects; "existing": the caller's Ray, stop removes our app only


_server: ServerHandle | None = None


def _check_options(opts: ServeOptions) -> None:
    for name, value, low in (("--port", opts.port, 1), ("--replicas", opts.replicas, 1),
                             ("--max-batch", opts.max_batch, 1), ("--max-queued", opts.max_queued, 0),
                             ("--max-pixels", opts.max_pixels, 4), ("--max-body-mb", opts.max_body_bytes, 1)):
        if value < low:
            raise ConfigError(f"{name} {value}: must be at least {low}")
    if opts.port > 65535:
        raise ConfigError(f"--port {opts.port}: must be at most 65535")
    if opts.batch_wait_ms < 0 or opts.timeout_s <= 0:
        raise ConfigError("--batch-wait-ms must be >= 0 and --timeout > 0")
    if opts.max_ongoing is not None and opts.max_ongoing < opts.max_batch:
        raise ConfigError(f"--max-ongoing {opts.max_ongoing} is below --max-batch {opts.max_batch}: a batch could "
                          "never fill; raise --max-ongoing or lower --max-batch")


def check_port(host: str, port: int) -> None:
    """Bind host:port once, as the proxy will (SO_REUSEADDR like uvicorn), so a taken port is a one-line error
    before Ray starts rather than a proxy failing inside Ray."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: {host}:{port} is in use (another server?); pick another "
                                  "--port or stop the other server") from None
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); use an address "
                              "of this machine (127.0.0.1, 0.0.0.0)") from None


def open_backend(opts: ServeOptions) -> Backend:
    """The model as each replica opens it (and start_server once beforehand). ONNX Runtime's workers do not spin:
    spinning, they lose their barriers to the proxy, decoding and encoding on the same cores (ResNet-9 on 2 cores,
    16 clients: 1.08 req/s spinning, 1.59 not, 1.67 for 1 client). Backends without the option ignore it."""
    from cyclegan_deploy.commands.media_cmd import _open_backend
    from cyclegan_deploy.tiling import maybe_tiled

    if opts.opener is not None:
        return maybe_tiled(opts.opener(), opts.tile, opts.tile_overlap)
    return maybe_tiled(_open_backend(Path(opts.artifact), opts.backend, opts.device, opts.precision, opts.threads,
                                     spin=False), opts.tile, opts.tile_overlap)


def _preflight(opts: ServeOptions) -> Backend:
    """Open the model here once: a bad file, a missing runtime or a non-RGB card fails now, typed."""
    backend = open_backend(opts)
    check_generator(backend.meta, model_label(backend, opts.artifact), "serve")
    return backend


def _resources(opts: ServeOptions, device: str) -> tuple[dict[str, float], int | None]:
    """(ray_actor_options, threads per replica): CPU replicas reserve their threads as Ray CPUs, so Ray never
    packs two onto the same cores; a request the cluster cannot hold is refused instead of pending forever."""
    import ray

    total = ray.cluster_resources()
    if device != "cpu":
        gpus = float(total.get("GPU", 0))
        if gpus <= 0:
            raise BackendUnavailableError(f"--device {device}: the Ray cluster has no GPU; use --device cpu")
        return {"num_cpus": 1, "num_gpus": 1.0 if gpus >= opts.replicas else gpus / opts.replicas}, None
    cpus = int(total.get("CPU", 1))
    threads = opts.threads or max(1, min(cpus, machine.physical_cores()) // opts.replicas)
    if threads * opts.replicas > cpus:
        raise ConfigError(f"--replicas {opts.replicas} x --threads {threads} needs {threads * opts.replicas} CPUs, "
                          f"the Ray cluster has {cpus}; lower --threads or --replicas")
    return {"num_cpus": threads}, threads


def _wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BackendUnavailableError(f"{url}: the server did not answer /healthz within {READY_TIMEOUT_S:g} s "
                                          "of starting; see Ray's log above")
        time.sleep(0.2)


def start_server(artifact: str | Path, opts: ServeOptions | None = None) -> ServerHandle:
    """Serve `artifact` until stop_server(); returns once it answers. Typed errors for bad options, a port in
    use, a bad model file or a cluster that cannot hold the replicas."""
    global _server
    opts = replace(opts or ServeOptions(), artifact=str(artifact))
    _check_options(opts)
    if _server is not None:
        raise ConfigError(f"a server is already running in this process at {_server.url}; stop it first")
    local = opts.address is None
    if local:
        check_port(opts.host, opts.port)
    probe = _preflight(opts)
    name, device = probe.name, probe.device
    probe.close()

    from cyclegan_deploy.scale.cluster import start_ray  # shared with `cgdeploy batch`

    ray_mode = start_ray(opts.address)
    url = _url(opts.host, opts.port)
    try:
        from ray import serve

        from cyclegan_deploy.scale.serve_app import Translator

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines repeat what the command prints
        actor, threads = _resources(opts, device)
        opts = replace(opts, threads=threads)
        quiet: dict[str, Any] = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options={"host": opts.host, "port": opts.port}, logging_config=quiet)
        deployment: Any = Translator  # @serve.deployment made the class a Deployment; its annotations don't say so
        app = deployment.options(num_replicas=opts.replicas, max_ongoing_requests=opts.ongoing,
                                 max_queued_requests=opts.max_queued, ray_actor_options=actor,
                                 graceful_shutdown_timeout_s=DRAIN_S).bind(opts)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=quiet)
        except RuntimeError as e:
            raise BackendUnavailableError(f"{artifact}: the server's replicas did not start ({_last_line(e)})") from e
        if local:  # a wildcard address is answered on loopback too
            near = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(opts.host, opts.host)
            _wait_ready(_url(near, opts.port), time.monotonic() + READY_TIMEOUT_S)
    except BaseException:
        _shutdown(ray_mode)
        raise
    _server = ServerHandle(url, name, opts.replicas, threads, opts, ray_mode)
    return _server


def _last_line(e: BaseException) -> str:
    """The last unindented line: a failed replica's RuntimeError carries its remote traceback, cause last."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith(" ")]
    return (lines[-1] if lines else type(e).__name__)[:300]


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _shutdown(ray_mode: str) -> None:
    import ray
    from ray import serve

    try:
        if ray_mode == "local":
            serve.shutdown()
        elif ray.is_initialized():
            serve.delete(APP_NAME)
            if not serve.status().applications:  # Serve ran only for us: leave the cluster as we found it
                serve.shutdown()
    finally:
        if ray_mode != "existing" and ray.is_initialized():
            ray.shutdown()  # a joined cluster keeps running: this only disconnects


def stop_server() -> None:
    """Stop what start_server started (safe to call twice, or with nothing running)."""
    global _server
    if _server is None:
        return
    server, _server = _server, None
    _shutdown(server.ray_mode)
