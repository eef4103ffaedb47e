"""A cluster of real node processes, for the tools that run one: the demo,
`zmqfail kill --restart`, tools/bench and the process tests.

One place that starts nodes from a config, reads their typed status, waits
with a deadline for a role or a state, and ends what it started (also on
failure: `close`, or leave the `with` block). Waiting fails fast when the
node's own process exits, with the log to read, instead of at the deadline.

The nodes are separate processes in their own sessions (a signal to the tool
never reaches them). Who starts them can be replaced (`spawn`): the tests
start them through their `procs` fixture, which kills them at teardown, and
the bench through its reaper, which kills them on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from zmqfail import config
from zmqfail.client.control import call, cluster_status, node_status
from zmqfail.config import ClusterConfig, NodeConfig
from zmqfail.core.status import NodeStatus
from zmqfail.errors import ConfigError, NodeError, Unavailable
from zmqfail.failover.state import Role, State
from zmqfail.security import generate_cluster

Spawn = Callable[[str], "subprocess.Popen[bytes]"]  # node name -> its process
POLL = 0.05  # seconds between two readings while waiting (each costs the node a status)
# Seconds one reading may take: a busy node (or a loaded machine) answers
# late, not never, and a reading cut short would call it unreachable. A
# reading is never shortened to fit the deadline, so a wait may end up to
# this much after it.
ASK = 2.0


def spawn_node(
    cfg_path: Path, name: str, log: Path, prefix: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """Start `zmqfail node` as its own process and session (so a signal to the
    tool never reaches it, and killpg reaches only it), appending to `log`.
    `prefix`: a command to run it under (`ip netns exec NS`, which execs the
    node in place, so the process is still the node's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "zmqfail", "node", "--config", str(cfg_path), "--name", name]
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*prefix, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def spawn_witness(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `zmqfail witness` for the config's [witness] table, as its own
    process and session, appending to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "zmqfail", "witness", "--config", str(cfg_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def where(st: NodeStatus) -> str:
    """Role and state as a reading shows them: "backup/syncing", or why not."""
    if not st.reachable:
        return f"unreachable ({st.error})" if st.error else "unreachable"
    return f"{st.role_name}/{st.state_name}"


def whole(rows: list[NodeStatus]) -> bool:
    """One primary, every other node a backup, all in the normal state."""
    roles = sorted(r.role.value for r in rows if r.role is not None and r.state is State.NORMAL)
    return roles == ["backup"] * (len(rows) - 1) + ["primary"]


class Cluster:
    """The nodes of one config, some of them started by this object.

    `logs`: a directory for each node's output (node-NAME.log); by default
    each node logs to node.log in its data dir. `sole_owner`: nobody else
    starts these nodes, so a process of ours that exited while we wait for
    its node is an error at once (give False when another tool restarts
    them, as `zmqfail kill --restart` does).
    """

    def __init__(
        self,
        cfg: ClusterConfig,
        spawn: Spawn | None = None,
        logs: Path | None = None,
        sole_owner: bool = True,
    ) -> None:
        self.cfg = cfg
        self.logs = logs
        self.sole_owner = sole_owner
        self._spawn = spawn or self._spawn_node
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.witness: subprocess.Popen[bytes] | None = None  # `start_witness`

    @classmethod
    def in_dir(
        cls,
        directory: Path,
        nodes: int = 2,
        base_port: int | None = None,
        app: str = "orders",
        name: str | None = None,
        spawn: Spawn | None = None,
        secure: bool = False,
        witness: bool = False,
    ) -> Cluster:
        """A fresh config in `directory` (nodes on loopback, data dirs beside
        it; free ports unless `base_port`; a [witness] table if `witness`),
        its nodes logging there too; with `secure`, CurveZMQ on every channel
        and new keys in `directory`/keys."""
        from zmqfail.netutil import free_base_port

        port = base_port if base_port is not None else free_base_port(10 * nodes + 5)
        text = config.render(
            nodes=nodes,
            base_port=port,
            app=app,
            name=name or "local",
            secure=secure,
            witness=witness,
        )
        path = directory / "zmqfail.toml"
        directory.mkdir(parents=True, exist_ok=True)
        if secure:
            generate_cluster(directory / "keys", [chr(ord("a") + i) for i in range(nodes)])
        path.write_text(text)
        return cls(config.load(path), spawn, logs=directory)

    def shard(self, name: str) -> Cluster:
        """The servers of one shard (``ClusterConfig.shard``) as a cluster of
        their own, sharing this one's processes: what it starts, kills or
        closes is this one's too. Waiting for a whole pair (`wait_whole`,
        `primary`) means one shard's, so on a config with [shards] ask it of
        each shard's view."""
        view = Cluster(self.cfg.shard(name), self._spawn, self.logs, self.sole_owner)
        view.procs = self.procs
        return view

    def start_shards(self, timeout: float = 20.0) -> dict[str, NodeStatus]:
        """Start every shard's servers and wait until each shard is whole;
        each shard's primary, by shard name. A shard's configured primary
        starts first and the others once it serves (a fresh pair started at
        once may elect either), so the layout is the config's: with
        ``config init --shards``, the primaries spread over the machines."""
        views = {sh.name: self.shard(sh.name) for sh in self.cfg.shards}
        for sh in self.cfg.shards:
            views[sh.name].start(sh.primary)
        for sh in self.cfg.shards:
            views[sh.name].wait_until(sh.primary, lambda st: st.serving, "serving", timeout)
            views[sh.name].start(*(n for n in sh.nodes if n != sh.primary))
        return {name: v.wait_whole(timeout) for name, v in views.items()}

    # ------------------------------------------------------------ processes
    def log_of(self, name: str) -> Path:
        if self.logs is not None:
            return self.logs / f"node-{name}.log"
        return self.cfg.node(name).data_dir / "node.log"

    @property
    def path(self) -> Path:
        if self.cfg.path is None:
            raise ConfigError("starting nodes needs a config file: every node reads the same one")
        return self.cfg.path

    def _spawn_node(self, name: str) -> subprocess.Popen[bytes]:
        return spawn_node(self.path, name, self.log_of(name))

    def start(self, *names: str) -> None:
        """Start these nodes (every node of the config when none are named)."""
        for name in names or tuple(n.name for n in self.cfg.nodes):
            self.cfg.node(name)  # an unknown name is a ConfigError, not a process
            self.procs[name] = self._spawn(name)

    def start_witness(self) -> subprocess.Popen[bytes]:
        """Start the config's witness (it logs to witness.log beside the
        nodes' logs); `close` ends it with the nodes."""
        if self.cfg.witness is None:
            raise ConfigError("the config has no [witness] table")
        log = (self.logs or self.cfg.witness.data_dir.parent) / "witness.log"
        self.witness = spawn_witness(self.path, log)
        return self.witness

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send `sig` to the node's process (group) that we started."""
        p = self._own(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)

    def kill(self, name: str, timeout: float = 20.0) -> int:
        """SIGKILL the node we started and reap it; its exit status."""
        p = self._own(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        return p.wait(timeout)

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        """A clean stop (it flushes and answers everything processed first),
        through its control socket. Returns the exit status of a process we
        started; for one started elsewhere, waits until it stops answering."""
        call(self.cfg.node(name), "stop", timeout=2.0)
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            return p.wait(timeout)
        self.wait_until(name, lambda st: not st.reachable, "stopped", timeout)
        return None

    def _own(self, name: str) -> subprocess.Popen[bytes]:
        p = self.procs.get(name)
        if p is None:
            raise NodeError(f"node {name} was not started here")
        return p

    def close(self) -> None:
        """Kill every node process still running that we started (and the witness)."""
        ours = [*self.procs.values(), *([self.witness] if self.witness else [])]
        for p in ours:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for p in ours:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- status
    def _exited(self, name: str) -> str | None:
        """Why `name` cannot answer, known without asking: the process we
        started for it has exited, and nobody else starts it (`sole_owner`).
        Asked, a dead node costs a reading its whole timeout, and every
        reading of the cluster with it."""
        p = self.procs.get(name)
        if self.sole_owner and p is not None and p.poll() is not None:
            return f"its process exited with status {p.returncode}"
        return None

    def status(self, name: str, digest: bool = False, timeout: float = 2.0) -> NodeStatus:
        """The node's typed status; unreachable (with the reason) when it does not answer."""
        return self._read(self.cfg.node(name), digest, timeout)

    def _read(self, node: NodeConfig, digest: bool, timeout: float) -> NodeStatus:
        exited = self._exited(node.name)
        if exited is not None:
            return NodeStatus.unreachable(node.name, exited)
        return node_status(node, digest, timeout)

    def statuses(self, digest: bool = False, timeout: float = 2.0) -> list[NodeStatus]:
        """Every node's status in config order, asked all at once."""
        return cluster_status(self.cfg, digest, timeout, read=self._read)

    def primary(self, timeout: float = 2.0) -> NodeStatus | None:
        """The node serving clients at the highest epoch, if any."""
        serving = [s for s in self.statuses(timeout=timeout) if s.serving]
        return max(serving, key=lambda s: s.epoch or 0, default=None)

    def wait(
        self, name: str, *states: State, role: Role | None = None, timeout: float = 20.0
    ) -> NodeStatus:
        """Until the node has `role` (if given) and one of `states` (if any)."""
        want = "/".join(
            x for x in (role.value if role else "", "|".join(s.value for s in states)) if x
        )
        allowed = frozenset(states or State)

        def ok(st: NodeStatus) -> bool:
            return st.state in allowed and (role is None or st.role is role)

        return self.wait_until(name, ok, want or "reachable", timeout)

    def wait_until(
        self,
        name: str,
        cond: Callable[[NodeStatus], object],
        what: str,
        timeout: float = 20.0,
        digest: bool = False,
    ) -> NodeStatus:
        """Until `cond(status)` holds; the status that satisfied it. Raises
        Unavailable at the deadline, NodeError when our process for the node
        has exited (see `sole_owner`), each naming what the node was doing."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(name, digest, 2 * ASK if digest else ASK)
            if cond(st):
                return st
            p = self.procs.get(name)
            if self.sole_owner and p is not None and p.poll() is not None and not st.reachable:
                raise NodeError(
                    f"node {name} exited with status {p.returncode} while we waited for it "
                    f"to be {what}; see {self.log_of(name)}"
                )
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"node {name} did not become {what} within {timeout:g}s: it is {where(st)}"
                )
            time.sleep(POLL)

    def wait_all(
        self, cond: Callable[[list[NodeStatus]], object], what: str, timeout: float = 20.0
    ) -> list[NodeStatus]:
        """Until `cond` holds of every node's status (config order) at once."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.statuses(timeout=ASK)
            if cond(rows):
                return rows
            if time.monotonic() > deadline:
                now = ", ".join(f"{r.name} {where(r)}" for r in rows)
                raise Unavailable(f"the cluster did not become {what} within {timeout:g}s: {now}")
            time.sleep(POLL)

    def wait_whole(self, timeout: float = 20.0) -> NodeStatus:
        """Until one node is primary and every other its backup, all in the
        normal state, whoever leads; the primary's status."""
        rows = self.wait_all(whole, "whole (a primary and in-sync backups)", timeout)
        return next(r for r in rows if r.role is Role.PRIMARY)
