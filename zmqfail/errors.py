"""One error family for everything zmqfail raises on purpose.

Callers catch ``ZmqfailError`` for "zmqfail said no", and look at
``RETRYABLE`` to decide whether the same request may be tried again (on this
server or another) without risk: the request was certainly not applied, or the
dedup table will answer a resend from the stored reply.
"""

from __future__ import annotations


class ZmqfailError(Exception):
    """Base of every error zmqfail raises deliberately."""


class ConfigError(ZmqfailError):
    """The configuration file or a command-line option is invalid."""


class ProtocolError(ZmqfailError):
    """A frame could not be decoded or failed validation."""


class NotActive(ZmqfailError):
    """The server is not the active one (it is a backup, or syncing)."""


class LogCorrupt(ZmqfailError):
    """The transaction log or a snapshot is damaged where it must not be."""

    def __init__(self, path: str, offset: int, reason: str, advice: str = "") -> None:
        # `advice`: what the operator should do next, when the raiser knows it.
        text = f"{path}: offset {offset}: {reason}"
        super().__init__(f"{text}; {advice}" if advice else text)
        self.path = path
        self.offset = offset
        self.reason = reason
        self.advice = advice

    def __reduce__(self) -> tuple[type[LogCorrupt], tuple[str, int, str, str]]:
        # Errors cross process boundaries (the simulator's campaign workers):
        # rebuild from the constructor's arguments, not from the message.
        return (type(self), (self.path, self.offset, self.reason, self.advice))


class LogWriteFailed(ZmqfailError):
    """Writing or syncing the transaction log failed (disk full, I/O error).

    Nothing written after the last successful sync may be acknowledged; the
    node stops. ``path`` is the segment file, ``errno`` the OS error number."""

    def __init__(self, path: str, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno
        self.message = message

    def __reduce__(self) -> tuple[type[LogWriteFailed], tuple[str, int | None, str]]:
        return (type(self), (self.path, self.errno, self.message))


class RequestTimeout(ZmqfailError):
    """No reply arrived in time. The request may or may not have been applied:
    resend it with the same msg_id and the dedup table answers."""


class Unavailable(ZmqfailError):
    """No server answered before the deadline."""


class ClientClosed(ZmqfailError):
    """The client was closed with this request not yet answered: its outcome
    is unknown (a new client with the same client id may resend it)."""


class NodeError(ZmqfailError):
    """A node cannot start or keep running (port in use, data dir locked...)."""


class RoutingError(ZmqfailError):
    """A request a sharded client cannot send to exactly one shard: it names
    no routing key, a key no shard owns, or keys of several shards (cross-shard
    work is out of scope). Raised before anything is sent."""


class WitnessError(ZmqfailError):
    """The witness cannot start or keep its word (damaged or missing store,
    data dir in use, a failed write): it must not grant from a guess."""


# Errors after which resending the same (client_id, msg_id) is safe and useful.
RETRYABLE: tuple[type[ZmqfailError], ...] = (NotActive, RequestTimeout, Unavailable)
