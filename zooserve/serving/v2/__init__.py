"""The standard Open Inference Protocol (KServe v2 / Triton), one of the gateway's protocols.

TorchServe 0.12 serves its Open Inference service under its own proto package, which Triton's and
KServe's clients cannot call. The gateway serves the standard ``inference.GRPCInferenceService``
(gRPC, default port 8001) and the ``/v2`` REST API (default port 8000) and forwards to
TorchServe's own OIP service (``org.pytorch.serve.grpc.openinference``): metadata RPCs as the
same bytes (the two protos are wire-compatible), inference per batch element as admitted calls,
with what TorchServe 0.12 lacks added here: ``raw_input_contents``, request parameters, per-task
tensor metadata, numeric outputs and standard status codes.

Modules: ``tensors`` (neutral tensors, raw codecs), ``tasks`` (metadata and outputs per task),
``backend`` (TorchServe's OIP gRPC service), ``frontend`` (the operations), ``grpc_api`` /
``rest_api`` (the two wire forms), ``metrics``.
"""
