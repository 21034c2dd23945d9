"""The TensorRT 10 builder surface export/tensorrt.build_engine uses, as a stand-in module recording what it is
asked (TensorRT cannot be installed here). No Runtime: the build must not deserialize the engine it just built.
Shared by the FP32/FP16 and the INT8 engine-build tests."""

from __future__ import annotations

import types
from typing import Any


def fake_tensorrt(calls: list[tuple[Any, ...]], *, outputs: int = 1, profile_index: int = 0,
                  set_shape_error: str | None = None, input_name: str = "input") -> types.ModuleType:
    """Records ("create_network", flags), ("parser_flag", flag), ("parse", path), ("parse_bytes", path, model
    bytes), ("set_shape", name, lo, opt, hi), ("add_optimization_profile",), ("build",) and (name, args) for any
    other builder-config call."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.3.9"  # type: ignore[attr-defined]

    class ILogger:
        class Severity:
            ERROR, INTERNAL_ERROR, WARNING = "E", "IE", "W"

        def __init__(self) -> None:
            pass

    class Network:
        num_inputs, num_outputs = 1, outputs

        def get_input(self, i: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(name=input_name)

    class OptimizationProfile:
        def set_shape(self, name: str, lo: list[int], opt: list[int], hi: list[int]) -> None:
            if set_shape_error:
                raise ValueError(set_shape_error)
            calls.append(("set_shape", name, lo, opt, hi))

    class Config:
        builder_optimization_level = 0

        def add_optimization_profile(self, profile: OptimizationProfile) -> int:
            calls.append(("add_optimization_profile",))
            return profile_index

        def __getattr__(self, name: str) -> Any:  # memory pools, flags, timing caches
            return lambda *a, **k: calls.append((name, a)) or types.SimpleNamespace(serialize=lambda: b"cache")

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calls.append(("build",))
            return b"engine-bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: ILogger) -> None:
            pass

        def set_flag(self, flag: int) -> None:
            calls.append(("parser_flag", flag))

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", path))
            return True

        def parse(self, model: bytes, path: str | None = None) -> bool:
            calls.append(("parse_bytes", path, model))
            return True

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser  # type: ignore[attr-defined]
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=3)  # type: ignore[attr-defined]
    trt.OnnxParserFlag = types.SimpleNamespace(NATIVE_INSTANCENORM=0)  # type: ignore[attr-defined]
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)  # type: ignore[attr-defined]
    trt.BuilderFlag = types.SimpleNamespace(TF32=7, INT8=2, FP16=1)  # type: ignore[attr-defined]
    trt.Dims = list  # type: ignore[attr-defined]
    return trt
