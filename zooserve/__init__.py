"""zooserve: serve the classic networks with TorchServe."""

__version__ = "0.2.0"
