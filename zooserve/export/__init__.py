"""Exports (TorchScript, AOTInductor, TensorRT), FC-to-conv conversion and TorchServe archives."""
