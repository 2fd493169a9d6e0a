"""The benchmark harness behind ``zooserve bench``: model-only limit, served REST/gRPC, stock
TorchServe handler, batch sweep, report (markdown tables + PNG plots)."""
