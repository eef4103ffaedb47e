"""Fault schedules: seeded random ones for campaigns, and named ones that
reproduce what was seen with real processes.

A schedule is a function of the cluster that puts its steps on the loop. The
kinds are the rows of the partition table in docs/architecture.md; `SAFE`
lists those the table says the pair survives without losing an acknowledged
request (the CI campaign runs only these and expects zero violations). The
others have a documented outcome and are run for convergence, or kept as
named regression cases.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from zmqfail.sim.cluster import Cluster

Fault = Callable[[Cluster, random.Random, float], None]  # cluster, rng, when


def _primary(c: Cluster) -> str:
    return c.primary() or "a"


def _backup(c: Cluster) -> str:
    p = _primary(c)
    return next(n for n in c.servers if n != p)


def crash_primary(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        name = _primary(c)
        c.crash(name)
        c.loop.after(rng.uniform(0.2, 1.0), lambda: c.restart(name))

    c.loop.at(t, go)


def crash_backup(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        name = _backup(c)
        c.crash(name)
        c.loop.after(rng.uniform(0.2, 1.0), lambda: c.restart(name))

    c.loop.at(t, go)


def pause_primary(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        name = _primary(c)
        c.pause(name)
        c.loop.after(rng.uniform(0.1, 1.0), lambda: c.resume(name))

    c.loop.at(t, go)


def pause_backup(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        name = _backup(c)
        c.pause(name)
        c.loop.after(rng.uniform(0.1, 1.0), lambda: c.resume(name))

    c.loop.at(t, go)


def _cut(nets: tuple[str, ...]) -> Fault:
    def fault(c: Cluster, rng: random.Random, t: float) -> None:
        def go() -> None:
            a, b = "a", "b"
            for net in nets:
                c.cut(a, b, net)
            c.loop.after(rng.uniform(0.1, 1.0), lambda: _heal(c, a, b, nets))

        c.loop.at(t, go)

    return fault


def crash_witness(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        w = c.witness
        if w is None:
            return
        c.faults += 1
        c.log("crash the witness")
        w.crash()

        def back() -> None:
            c.log("restart the witness")
            w.restart()

        c.loop.after(rng.uniform(0.2, 1.5), back)

    c.loop.at(t, go)


def cut_witness(c: Cluster, rng: random.Random, t: float) -> None:
    """One server loses the witness for a while (the other keeps it)."""

    def go() -> None:
        name = rng.choice(sorted(c.servers))
        c.cut(name, "w", "clients")
        c.loop.after(rng.uniform(0.2, 1.5), lambda: _heal(c, name, "w", ("clients",)))

    c.loop.at(t, go)


def _heal(c: Cluster, a: str, b: str, nets: tuple[str, ...]) -> None:
    for net in nets:
        c.net.heal(a, b, net)
    c.log(f"heal {a} <-> {b} on {', '.join(nets)}")


def isolate_primary(c: Cluster, rng: random.Random, t: float) -> None:
    """The primary loses the backup and every client (its client network is
    down, so the backup's probes do not reach it either); the backup keeps
    the clients."""

    def go() -> None:
        p, b = _primary(c), _backup(c)
        cut = [(p, b, "main"), (p, b, "failsafe"), (p, b, "clients")]
        cut += [(p, cl.id, "clients") for cl in c.clients]
        for x, y, net in cut:
            c.cut(x, y, net)

        def heal() -> None:
            for x, y, net in cut:
                c.net.heal(x, y, net)
            c.log(f"heal {p}'s isolation")

        c.loop.after(rng.uniform(0.5, 1.5), heal)

    c.loop.at(t, go)


def slow_network(c: Cluster, rng: random.Random, t: float) -> None:
    """Delay on every network, and lost heartbeats, for a while."""

    def go() -> None:
        delay = rng.uniform(0.01, 0.08)
        for x in c.servers:
            for y in [*c.servers, *(cl.id for cl in c.clients)]:
                if x != y:
                    for net in ("main", "failsafe", "clients"):
                        c.net.delay[(x, y, net)] = delay
                        c.net.delay[(y, x, net)] = delay
        c.net.hb_loss = rng.uniform(0.0, 0.2)
        c.faults += 1
        c.log(f"slow network: +{delay * 1000:.0f} ms, heartbeats lost")

        def heal() -> None:
            c.net.delay.clear()
            c.net.hb_loss = 0.0
            c.log("network fast again")

        c.loop.after(rng.uniform(0.2, 1.0), heal)

    c.loop.at(t, go)


def slow_replication(c: Cluster, rng: random.Random, t: float) -> None:
    """The replication links get slow for a while (a busy machine, a long
    queue): records take milliseconds to reach the backup, not microseconds."""

    def go() -> None:
        delay = rng.uniform(0.005, 0.05)
        for x in c.servers:
            for y in c.servers:
                if x != y:
                    for net in ("main", "failsafe"):
                        c.net.delay[(x, y, net)] = delay
        c.faults += 1
        c.log(f"slow replication: +{delay * 1000:.0f} ms")

        def heal() -> None:
            for key in [k for k in c.net.delay if k[2] != "clients"]:
                del c.net.delay[key]
            c.log("replication fast again")

        c.loop.after(rng.uniform(0.3, 1.2), heal)

    c.loop.at(t, go)


def disk_error(c: Cluster, rng: random.Random, t: float) -> None:
    """The next flush of one server fails (EIO): it stops, acknowledging nothing
    after it; restarted later."""

    def go() -> None:
        name = rng.choice(sorted(c.servers))
        c.servers[name].disk.fail_flushes = 1
        c.faults += 1
        c.log(f"disk error at {name}")

    c.loop.at(t, go)


def power_loss(c: Cluster, rng: random.Random, t: float) -> None:
    def go() -> None:
        c.power_loss()
        order = sorted(c.servers)
        rng.shuffle(order)
        for i, name in enumerate(order):
            c.loop.after(0.2 + i * rng.uniform(0.0, 1.0), _restarter(c, name))

    c.loop.at(t, go)


# One server fault at a time is what the pair promises to survive (an
# acknowledgement outlives any single server's failure); network faults come
# on top: both replication links cut is safe since step 420 (the backup asks
# over the client network), every network between the servers is not
# (see UNSAFE).
def _restarter(c: Cluster, name: str) -> Callable[[], None]:
    return lambda: c.restart(name)


SERVER: dict[str, Fault] = {
    "crash-primary": crash_primary,
    "crash-backup": crash_backup,
    "pause-primary": pause_primary,
    "pause-backup": pause_backup,
    "disk-error": disk_error,
    "isolate-primary": isolate_primary,
}
NETWORK: dict[str, Fault] = {
    "cut-main": _cut(("main",)),
    "cut-failsafe": _cut(("failsafe",)),
    "cut-both-links": _cut(("main", "failsafe")),
    "slow-network": slow_network,
    "slow-replication": slow_replication,
}
SAFE = {**SERVER, **NETWORK}
# Outcomes the partition table documents as losing acknowledged requests: a
# power loss of every server (what neither had flushed), and the servers cut
# from each other on every network while clients reach both (without a
# witness each may serve alone: split brain).
UNSAFE: dict[str, Fault] = {
    "power-loss": power_loss,
    "split-servers": _cut(("main", "failsafe", "clients")),
}
# With a witness: its own faults, and the servers split on every network
# while each reaches the witness, become safe (exactly one may lead).
WITNESS: dict[str, Fault] = {
    "crash-witness": crash_witness,
    "cut-witness": cut_witness,
    "split-servers": _cut(("main", "failsafe", "clients")),
}
ALL = {**SAFE, **UNSAFE, **WITNESS}
# Violations a schedule outside the safe set may show by design; the rest
# (applied twice, out of order, diverged tables, no service) never.
ALLOWED_UNSAFE = frozenset({"lost", "split"})


def random_schedule(
    seed: int, safe: bool = True, witness: bool = False
) -> tuple[Callable[[Cluster], None], list[str]]:
    """Safe: one server fault and up to two network faults (with a witness:
    its faults and the servers split on every network count as network
    faults). Otherwise: one to three faults of any kind, at once or one after
    another: double failures, power loss, servers split on every network."""
    rng = random.Random(seed * 7919 + 17)
    if safe:
        picked = [rng.choice(sorted(SERVER))]
        nets = {**NETWORK, **WITNESS} if witness else NETWORK
        picked += rng.sample(sorted(nets), rng.randint(0, 2))
    else:
        kinds = sorted(ALL) if witness else sorted({**SAFE, **UNSAFE})
        picked = [rng.choice(kinds) for _ in range(rng.randint(1, 3))]
    times = sorted(rng.uniform(0.0, 1.5) for _ in picked)

    def apply(c: Cluster) -> None:
        start = c.loop.now
        for name, dt in zip(picked, times, strict=True):
            ALL[name](c, rng, start + dt)

    return apply, picked


# ---------------------------------------------------------------- named cases
def audit_both_links_cut(c: Cluster) -> None:
    """The outside audit's loss, as it happened with real processes: both
    replication links of a loaded primary cut for 1.5 s, while one client
    briefly hears nothing from it (its loop was slow) and votes for the
    backup. Under the old rule (silence plus a client vote) the backup took
    over, the primary ran alone for the other client, both served, and the
    old primary's acknowledged records were set aside when it learned the new
    epoch. Since step 420 the backup hears the primary over the client
    network and waits: nothing is lost."""
    start = c.loop.now + 0.2

    def cut() -> None:
        for net in ("main", "failsafe"):
            c.cut("a", "b", net)
        slow = c.clients[0].id
        c.net.delay[("a", slow, "clients")] = 0.6
        c.net.delay[(slow, "a", "clients")] = 0.6
        c.log(f"{slow} hears nothing from a for a while")

        def fast() -> None:
            c.net.delay.clear()

        def heal() -> None:
            for net in ("main", "failsafe"):
                c.net.heal("a", "b", net)
            c.log("links healed")

        c.loop.after(0.8, fast)
        c.loop.after(1.5, heal)

    c.loop.at(start, cut)


def takeover_write_fails(c: Cluster) -> None:
    """The primary crashes and the backup's synchronous flush on taking over
    fails (EIO): the backup must stop with exit code 3, acknowledging nothing
    more, not die of the exception; both come back and serve again. A double
    failure: what only the two RAM logs held may be lost."""

    def go() -> None:
        b = _backup(c)
        c.servers[b].disk.fail_drains = 1
        c.crash(_primary(c))
        c.log(f"{b}'s next synchronous write fails")

    def restart_all() -> None:
        for name in sorted(c.servers):
            c.restart(name)

    c.loop.at(c.loop.now + 0.2, go)
    c.loop.at(c.loop.now + 1.2, restart_all)


def double_failure(c: Cluster) -> None:
    """The partition table's double failure: the primary dies, the backup
    takes over and acknowledges, then dies too; the old primary restarts
    alone with older data. It must not lead (the newer server's
    acknowledgements would be lost); once the newer server is back, the pair
    serves again with everything. Checked every 10 ms of its time alone."""
    t = c.loop.now + 0.2
    a = _primary(c)
    b = next(n for n in c.servers if n != a)
    led = []

    def watch() -> None:
        core = c.servers[a].core
        if core is not None and core.agent.fs.active:
            led.append(c.loop.now)

    c.loop.at(t, lambda: c.crash(a))
    c.loop.at(t + 2.2, lambda: c.crash(b))
    c.loop.at(t + 2.3, lambda: c.restart(a))
    for i in range(150):
        c.loop.at(t + 2.3 + i * 0.01, watch)
    c.loop.at(t + 3.9, lambda: c.log(f"stale {a} {'LED' if led else 'waited'}"))


def _power_loss_then(first: str) -> Callable[[Cluster], None]:
    """Every server loses power under load; `first` ("primary" or "backup")
    comes back 0.3 s later, the other 1.5 s after that (the old primary then
    has made its start-up choice alone). Whatever neither had flushed is lost
    by design with durability "memory"; the servers must end with one
    history, serve again, and tell each client which of its acknowledged
    writes are gone (the checker's "untold")."""

    def apply(c: Cluster) -> None:
        for client in c.clients:  # busy: many acknowledgements within a flush interval
            client.think, client.window = 0.0, 4

        def go() -> None:
            p, b = _primary(c), _backup(c)
            order = (p, b) if first == "primary" else (b, p)
            c.power_loss()
            c.loop.after(0.3, lambda: c.restart(order[0]))
            c.loop.after(1.8, lambda: c.restart(order[1]))

        c.loop.at(c.loop.now + 0.4, go)

    return apply


def power_loss_backup_disk_lost(c: Cluster) -> None:
    """Every server loses power under load and the backup's disk does not
    survive it: the old primary restarts first, the backup 1.5 s later with
    an empty disk. Only the primary's own disk holds the history then: with
    durability "disk" it must hold every acknowledged write (it fsyncs before
    acknowledging, not only its backup); with "memory" the unflushed tail is
    lost by design, and told. The primary's drive is the slower one (its
    flushes take ten times the backup's), so a backup's ack often comes back
    before the primary's own flush ends: the order a primary must not take
    as enough."""
    for client in c.clients:
        client.think, client.window = 0.0, 4
    c.servers[_primary(c)].disk.slowness = 10.0

    def go() -> None:
        p, b = _primary(c), _backup(c)
        c.power_loss()
        c.servers[b].disk.replace()
        c.log(f"{b}'s disk replaced by an empty one")
        c.loop.after(0.3, lambda: c.restart(p))
        c.loop.after(1.8, lambda: c.restart(b))

    c.loop.at(c.loop.now + 0.4, go)


# Named cases that need longer than the usual fault window (seconds after SETTLE).
DURATION: dict[str, float] = {
    "power-loss-backup-disk-lost": 3.0,
    "double-failure": 4.2,
    "power-loss-primary-first": 3.0,
    "power-loss-backup-first": 3.0,
}

NAMED: dict[str, Callable[[Cluster], None]] = {
    "double-failure": double_failure,
    "audit-both-links-cut": audit_both_links_cut,
    "takeover-write-fails": takeover_write_fails,
    "power-loss-primary-first": _power_loss_then("primary"),
    "power-loss-backup-first": _power_loss_then("backup"),
    "power-loss-backup-disk-lost": power_loss_backup_disk_lost,
}
