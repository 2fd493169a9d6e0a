"""The gateway: zooserve's one front door, a process in front of TorchServe.

It serves TorchServe's REST and gRPC inference and management APIs on their usual ports (TorchServe
itself listens on private loopback ports) and the standard v2 protocol on Triton's, so that every
call is admitted against what its model can finish in time (``Overloaded`` + ``Retry-After``
beyond), carries a deadline that counts its time in the queue (``DeadlineExceeded``) and a request
id, and is measured and traced; models are drained before they are unloaded. ``zooserve serve``
starts it (``process``); ``python -m zooserve.serving.gateway`` runs it.
"""
