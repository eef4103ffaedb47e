"""The node core: every decision a zmqfail server makes, without I/O.

`NodeCore` takes observations (frames that arrived, a flush that finished, a
tick of the clock, an operator's command), each with the time `now` read once
by the shell, and answers with actions in its `Outbox` (frames to send) and
calls on the narrow `Disk` port it was given (flush, write meta, cut the log).
The shell (`zmqfail.node`) moves bytes and touches files; the simulator
(`zmqfail.sim`) gives the same core an in-memory network, disk and clock.
"""

from zmqfail.core.node import NodeCore
from zmqfail.core.ports import Disk, Loaded, Outbox
from zmqfail.core.status import NodeStatus

__all__ = ["Disk", "Loaded", "NodeCore", "NodeStatus", "Outbox"]
