"""The client's failover logic without sockets (`ClientCore`), on a fake clock:
a client that found no server keeps looking, backing off, and takes the
first server that says it is active (step 420's other half: the backup takes
over with no client connected, and a client that comes later must find it)."""

from __future__ import annotations

import itertools

import pytest

from zmqfail.client.core import HELLO_EVERY, HELLO_MAX, ClientCore
from zmqfail.client.session import ClientState, Session
from zmqfail.protocol import Hello, Register, Welcome, decode

pytestmark = pytest.mark.timeout(30)

T0 = 1000.0


def hellos(core: ClientCore) -> list[int]:
    """Servers a hello went to since the last call (and empty the outbox)."""
    sent = [idx for idx, data in core.out if isinstance(decode(data), Hello)]
    core.out.clear()
    return sent


def test_a_lost_client_keeps_looking_with_backoff_and_finds_a_late_server() -> None:
    core = ClientCore(["a", "b"], Session("c1"), failover_after=0.15, lost_after=1.0)
    seen: list[tuple[ClientState, ClientState]] = []
    core.listeners.append(lambda old, new: seen.append((old, new)))
    core.search(T0)
    now = T0
    times: list[float] = []
    while now < T0 + 20:
        core.tick(now)
        if hellos(core) == [0, 1]:
            times.append(now)
        now = max(core.next_deadline(now), now + 0.001)
    assert core.state is ClientState.LOST
    assert seen[-1] == (ClientState.CONNECTING, ClientState.LOST)
    # It went on asking after it was LOST, no more often than HELLO_MAX.
    late = [t for t in times if t > T0 + 2]
    assert len(late) >= 15
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == pytest.approx(HELLO_EVERY)
    assert max(gaps) <= HELLO_MAX + 0.002
    assert gaps[-1] == pytest.approx(HELLO_MAX, abs=0.002)
    # b took over meanwhile: its welcome connects the client, which registers.
    core.on_frame(1, Welcome("b", 2, True).encode(), now)
    state: ClientState = core.state  # changed by on_frame (mypy narrowed it)
    assert state is ClientState.CONNECTED and core.active == 1
    assert seen[-1] == (ClientState.LOST, ClientState.CONNECTED)
    assert [type(decode(d)) for _, d in core.out] == [Register]


def test_an_inactive_welcome_does_not_end_the_search() -> None:
    core = ClientCore(["a", "b"], Session("c1"), failover_after=0.15, lost_after=1.0)
    core.search(T0)
    core.tick(T0 + 5)
    core.on_frame(0, Welcome("a", 1, False).encode(), T0 + 5)
    assert core.state is ClientState.LOST and core.active is None


def test_a_client_that_never_looked_for_a_server_is_idle_not_lost() -> None:
    """A client polled before its first request (a shard's client the router
    has not used yet) once read its search as begun at time 0 and reported
    LOST at its first tick; its lost deadline starts with its first search."""
    core = ClientCore(["a", "b"], Session("c1"), failover_after=0.15, lost_after=1.0)
    core.tick(T0)
    first = core.state  # (a name: mypy would keep the narrowing past search())
    assert first is ClientState.CONNECTING and core.out == []
    assert core.next_deadline(T0) > T0
    core.search(T0)
    core.tick(T0 + 1.5)
    assert core.state is ClientState.LOST
