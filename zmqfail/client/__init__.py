"""Client library: a sync client and an asyncio client over DEALER sockets."""

from zmqfail.client.session import ClientState, Session
from zmqfail.client.sync import Client

__all__ = ["Client", "ClientState", "Session"]
