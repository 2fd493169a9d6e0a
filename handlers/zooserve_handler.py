"""TorchServe entry point of a zooserve archive; the handler ships in the zooserve package."""

from zooserve.serving.handler import handle  # noqa: F401
