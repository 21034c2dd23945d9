"""Inference backends behind one protocol; see base.py. Heavy imports live inside each backend module."""

from cyclegan_deploy.backends.base import Backend, load_backend

__all__ = ["Backend", "load_backend"]
