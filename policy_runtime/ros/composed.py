"""The policy server and the executor in one process, for a single robot PC.

The chunk, the request and the observation heartbeat pass as direct calls instead of topics
(no DDS hop, no serialisation); each node still spins on its own thread, so the executor's
ticks never wait behind the server's observation callbacks, and inference runs on the server's
own thread. Everything else (the robot's and the cameras' topics, services, diagnostics) is
as with two processes.
"""

from __future__ import annotations

from rclpy.node import Node

from policy_runtime.chunk import ActionChunk
from policy_runtime.ros import executor_node, policy_server
from policy_runtime.ros.executor_node import Executor
from policy_runtime.ros.params import run_nodes
from policy_runtime.ros.policy_server import PolicyServer

#: Both nodes' parameters: ``-p`` arguments reach every node of the process, so a launch file
#: sets either node's parameters on this one executable.
PARAMETERS = {**policy_server.PARAMETERS, **executor_node.PARAMETERS}


def make_composed() -> list[Node]:
    """The two nodes, wired to each other."""
    executor: Executor | None = None

    def deliver(chunk: ActionChunk, t_obs: float) -> None:
        assert executor is not None  # chunks answer the executor's requests
        executor.chunk_arrived(chunk, t_obs)

    def heartbeat(t: float) -> None:
        if executor is not None:
            executor.observed(t)

    def unanswered(t_request: float) -> None:
        assert executor is not None
        executor.request_unanswered(t_request)

    server = PolicyServer(deliver=deliver, heartbeat=heartbeat, unanswered=unanswered)
    try:
        executor = Executor(request=server.request)
    except BaseException:
        server.close()  # its inference thread must not keep the process alive
        raise
    executor.set_policy(server.info)
    return [executor, server]


def main() -> None:
    raise SystemExit(run_nodes(make_composed))
