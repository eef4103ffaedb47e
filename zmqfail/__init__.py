"""zmqfail: primary/backup failover for on-line transaction processing over ZeroMQ."""

from zmqfail.errors import ZmqfailError

__version__ = "0.1.0"

__all__ = ["Client", "ZmqfailError", "__version__"]


def __getattr__(name: str) -> object:
    # The client pulls in pyzmq; keep `import zmqfail` cheap for the pure core.
    if name == "Client":
        from zmqfail.client.sync import Client

        return Client
    raise AttributeError(name)
