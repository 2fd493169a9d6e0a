"""The standard Open Inference Protocol (KServe v2 / Triton) in front of TorchServe.

TorchServe 0.12 serves its Open Inference service under its own proto package, which Triton's and
KServe's clients cannot call. This front-end serves the standard ``inference.GRPCInferenceService``
(gRPC, default port 8001) and the ``/v2`` REST API (default port 8000) and forwards to
TorchServe's own OIP service (``org.pytorch.serve.grpc.openinference``): metadata RPCs as the
same bytes (the two protos are wire-compatible), inference per batch element, with what TorchServe
0.12 lacks added here: ``raw_input_contents``, request parameters, per-task tensor metadata,
numeric outputs and standard status codes.

Modules: ``tensors`` (neutral tensors, raw codecs), ``tasks`` (metadata and outputs per task),
``catalog`` (model -> task from its archive), ``backend`` (TorchServe's OIP gRPC service),
``frontend`` (the operations), ``grpc_api`` / ``rest_api`` (the two wire forms), ``metrics``,
``process`` (start/wait from ``zooserve serve``); ``python -m zooserve.serving.v2`` runs it.
"""
