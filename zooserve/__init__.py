"""zooserve: serve the classic networks with TorchServe."""

__version__ = "0.1.0"
