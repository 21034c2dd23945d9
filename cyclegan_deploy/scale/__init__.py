"""Beyond one process: `cgdeploy batch` (many videos over Ray actors: inputs.py, segments.py, worker.py,
cluster.py, batch.py, progress.py, report.py) and `cgdeploy serve` (Ray Serve). Ray is the `[scale]` extra and
is imported only by the modules that talk to it (cluster.py, worker.py's actor methods run inside Ray), so
importing this package, or the runtime, does not import Ray."""
