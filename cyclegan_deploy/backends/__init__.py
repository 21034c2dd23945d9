"""Inference backends behind one base class (base.py), opened by artifact kind (factory.py).

Heavy imports live inside each backend module; importing this package imports no inference library.
"""

from cyclegan_deploy.backends.base import UNAVAILABLE, Backend, BackendOptions, check_batch
from cyclegan_deploy.backends.factory import BACKENDS, available_backends, load_backend, parse_backend_spec

__all__ = ["BACKENDS", "UNAVAILABLE", "Backend", "BackendOptions", "available_backends", "check_batch",
           "load_backend", "parse_backend_spec"]
