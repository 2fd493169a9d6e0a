"""KServe's own ModelServer fronting TorchServe: the alternative issue 17 measured the v2 proxy
against (``loadtests/v2_overhead.py --front 127.0.0.1:GRPC_PORT``).

Run it in an environment with the ``kserve`` package (protobuf 6, so not zooserve's; e.g. the
v2-clients venv, ``make v2clients``):

    .venv-v2clients/bin/python loadtests/kserve_front.py --backend 127.0.0.1:7070 \
        --grpc-port 8011 --http-port 8010 lenet5 tiny_resnet

Each model's ``predict`` re-encodes KServe's decoded request as a ModelInferRequest and sends it
to TorchServe's own OIP service (the same wire format), returning TorchServe's answer as the
protobuf ModelInferResponse, which KServe's gRPC servicer passes through: the lightest KServe
front there is (TorchServe's kserve_wrapper goes over REST and decodes more).

Note: KServe 0.21's ModelServer binds 0.0.0.0 (REST) and [::] (gRPC), hard-coded; run it only
where those ports are not reachable from elsewhere, and stop it after the measurement.
"""

from __future__ import annotations

import argparse

import grpc
import kserve
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

TS_INFER = "/org.pytorch.serve.grpc.openinference.GRPCInferenceService/ModelInfer"


class TorchServeModel(kserve.Model):
    def __init__(self, name: str, backend: str) -> None:
        super().__init__(name)
        self.backend = backend
        self.ready = False

    def load(self) -> bool:
        self.infer_call = None  # made on the first call: a grpc.aio channel belongs to the running loop
        self.ready = True
        return True

    async def predict(self, payload, headers=None, response_headers=None):  # noqa: ANN001, ANN201
        request = payload.to_grpc() if isinstance(payload, kserve.InferRequest) else payload
        request.model_name = self.name
        if self.infer_call is None:
            self.infer_call = grpc.aio.insecure_channel(self.backend).unary_unary(
                TS_INFER,
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
        auth = tuple((k, v) for k, v in (headers or {}).items() if k.lower() == "authorization")
        return await self.infer_call(request, metadata=auth)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="127.0.0.1:7070")
    p.add_argument("--http-port", type=int, default=8010)
    p.add_argument("--grpc-port", type=int, default=8011)
    p.add_argument("models", nargs="+")
    a = p.parse_args()
    models = [TorchServeModel(name, a.backend) for name in a.models]
    for m in models:
        m.load()
    kserve.ModelServer(http_port=a.http_port, grpc_port=a.grpc_port, workers=1).start(models)
