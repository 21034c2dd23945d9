"""Export stage: ONNX (FP32/FP16), parity gate, TensorRT engines, OpenVINO IR.

Import the submodules directly (`from cyclegan_deploy.export.onnx import export_onnx`); this package
imports nothing heavy itself so `cyclegan_deploy.export.tensorrt` helpers stay usable without torch.
"""
