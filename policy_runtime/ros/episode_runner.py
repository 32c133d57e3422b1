"""Runs simulated episodes through the ROS 2 graph and reports what happened.

For each episode: stop the robot program (the executor holds and stops asking for chunks),
reset the executor (an operator's reset: a stop the last episode latched is cleared), re-seed
the policy server's sampler with the episode's seed, reset the sim bridge with it (the bridge
runs the program from the episode's first tick); then wait for the bridge's episode status to
say done (the bridge stops the program there and keeps that status). Only services,
parameters and topics: the same runner works against any graph that has these nodes.

Each finished episode is appended to ``out``/episodes.jsonl at once. At the end it prints and
writes (``out``/``episodes.json``): the success rate with its 95%
interval, per-episode results, observation-to-chunk latency and control tick jitter (the
executor's diagnostics), safety interventions and holds, and camera delivery (frames received
over frames published); and an mp4 of the first episode from ``video_topic``. It then exits,
which ends a launch whose runner is marked ``on_exit: shutdown``.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_srvs.srv import SetBool, Trigger

from policy_runtime.evaluation.stats import wilson_interval
from policy_runtime.ros import qos
from policy_runtime.ros.messages import seconds
from policy_runtime.ros.params import Param, declare_parameters, positive
from policy_runtime.serving.topics import image_pixels

#: One JSON line per finished episode, in ``out``.
RECORDS_FILE = "episodes.jsonl"

PARAMETERS = {
    "episodes": Param(10, "episodes to run", positive),
    "seed": Param(100_000, "the first episode's seed (then one more each episode)"),
    "episode_timeout_s": Param(600.0, "wall seconds an episode may take", positive),
    "out": Param("", "directory for episodes.json and the video ('' : print only)"),
    "video_topic": Param("", "camera topic filmed in the first episode ('' : none)"),
    "camera_hz": Param(30.0, "the cameras' frame rate (the video's)", positive),
}


class EpisodeRunner(Node):
    def __init__(self, **kwargs: object) -> None:
        super().__init__("episode_runner", **kwargs)  # type: ignore[arg-type]
        self.params = declare_parameters(self, PARAMETERS)
        self.bridge_reset = self.create_client(Trigger, "/sim_bridge/reset")
        self.bridge_program = self.create_client(SetBool, "/sim_bridge/program_running")
        self.bridge_params = self.create_client(SetParameters, "/sim_bridge/set_parameters")
        self.server_reset = self.create_client(Trigger, "/policy_server/reset")
        self.executor_reset = self.create_client(Trigger, "/executor/reset")
        self.server_params = self.create_client(SetParameters, "/policy_server/set_parameters")
        self._lock = threading.Lock()
        self._episode: dict[str, str] = {}
        self._diagnostics: dict[str, dict[str, str]] = {}
        self._frames: list[np.ndarray] = []
        self._frames_received = 0
        self._filming = False
        self.create_subscription(
            DiagnosticArray, "/sim_bridge/episode", self._on_episode, qos.LATCHED
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos.STREAM)
        topic = self.params["video_topic"]
        if topic:
            self.create_subscription(Image, topic, self._on_image, qos.SENSOR)
        self.done = threading.Event()
        self.exit_code = 0

    def _on_episode(self, msg: DiagnosticArray) -> None:
        if msg.status:
            with self._lock:
                self._episode = {kv.key: kv.value for kv in msg.status[0].values}
                self._episode["stamp"] = f"{seconds(msg.header.stamp):.9f}"

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == "sim_bridge: cell":
                    # Frames received when the bridge counted those it published: one instant.
                    values["frames_received"] = str(self._frames_received)
                self._diagnostics[status.name] = {"message": status.message, **values}

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._frames_received += 1
            if self._filming:
                self._frames.append(np.array(image_pixels(msg)))

    # -- the run -------------------------------------------------------------------------------

    def _call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name} did not answer in {timeout} s")
            time.sleep(0.005)
        return future.result()

    def _set_seed(self, client: Any, seed: int) -> None:
        request = SetParameters.Request(
            parameters=[Parameter("seed", value=seed).to_parameter_msg()]
        )
        result = self._call(client, request)
        if not result.results[0].successful:
            raise RuntimeError(f"{client.srv_name}: seed refused ({result.results[0].reason})")

    def _program(self, running: bool) -> None:
        self._call(self.bridge_program, SetBool.Request(data=running))

    def _reset_executor(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            reply = self._call(self.executor_reset, Trigger.Request())
            if reply.success or "the loop is running" not in reply.message:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"/executor/reset: {reply.message} {timeout} s after the stop")
            time.sleep(0.01)

    def run_episode(self, index: int) -> dict[str, Any]:
        seed = int(self.params["seed"]) + index
        self._program(False)
        # Each episode starts with the whole stack fresh, as prt eval builds it per episode: the
        # operator's reset clears the stop the program's end latched. An executor still
        # "running" has not seen the program stop yet: ask again until it has.
        self._reset_executor()
        self._set_seed(self.server_params, seed)
        self._call(self.server_reset, Trigger.Request())
        self._set_seed(self.bridge_params, seed)
        with self._lock:
            self._filming = index == 0 and bool(self.params["video_topic"])
            before = int(self._episode.get("episode", "0"))
        reply = self._call(self.bridge_reset, Trigger.Request())
        if not reply.success:
            raise RuntimeError(f"/sim_bridge/reset failed: {reply.message}")
        # The bridge starts the episode with the program running and ends it at its first done
        # status, which then stays: nothing here races the episode.
        start = time.monotonic()
        while True:
            with self._lock:
                episode = dict(self._episode)
            if int(episode.get("episode", "0")) > before and episode.get("done") == "true":
                break
            if time.monotonic() - start > self.params["episode_timeout_s"]:
                raise TimeoutError(f"episode {index} (seed {seed}) did not finish in time")
            time.sleep(0.01)
        with self._lock:
            self._filming = False
        record = {
            "seed": int(episode["seed"]),
            "success": episode["success"] == "true",
            "score": float(episode["score"]),
            "steps": int(episode["step"]),
            "sim_s": float(episode["stamp"]) - float(episode["start"]),
            "wall_s": time.monotonic() - start,
            "start": float(episode["start"]),
            "end": float(episode["stamp"]),
        }
        self.get_logger().info(
            f"episode {index + 1}/{self.params['episodes']} seed {seed}: "
            f"{'success' if record['success'] else 'failure'} (score {record['score']:.3f}, "
            f"{record['steps']} steps, {record['wall_s']:.1f} s)"
        )
        return record

    def run(self) -> None:
        try:
            records = []
            for index in range(int(self.params["episodes"])):
                records.append(self.run_episode(index))
                self._log_record(records[-1])
            self._program(False)
            summary = self.summary(records)
            self.report(summary)
        except (TimeoutError, RuntimeError) as exc:
            self.get_logger().error(str(exc))
            self.exit_code = 1
        except Exception:  # a bug: say where, and fail the launch
            self.get_logger().error(f"episode runner failed:\n{traceback.format_exc()}")
            self.exit_code = 1
        finally:
            self.done.set()

    def _log_record(self, record: dict[str, Any]) -> None:
        """Append the episode to ``out``/episodes.jsonl as it ends: a long run that stops keeps
        every finished episode (``bench.ros_episodes`` resumes from there)."""
        if self.params["out"]:
            directory = Path(self.params["out"])
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / RECORDS_FILE).open("a") as log:
                log.write(json.dumps(record) + "\n")

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        time.sleep(1.2)  # one more diagnostics period, so the figures include the last episode
        with self._lock:
            diagnostics = {k: dict(v) for k, v in self._diagnostics.items()}
        successes = sum(r["success"] for r in records)
        low, high = wilson_interval(successes, len(records))
        executor = diagnostics.get("policy_runtime: executor", {})
        server = diagnostics.get("policy_runtime: policy_server", {})
        bridge = diagnostics.get("sim_bridge: cell", {})
        published, skipped = int(bridge.get("frames", 0)), int(bridge.get("frames_skipped", 0))
        received = int(bridge.get("frames_received", 0))
        return {
            "realtime": bridge.get("message") == "real time",
            "episodes": len(records),
            "successes": successes,
            "success_rate": successes / len(records),
            "interval95": [low, high],
            "obs_to_chunk_ms": [
                executor.get("obs_to_chunk_p50_ms"),
                executor.get("obs_to_chunk_p99_ms"),
            ],
            "request_to_chunk_ms": [
                executor.get("request_to_chunk_p50_ms"),
                executor.get("request_to_chunk_p99_ms"),
            ],
            "inference_ms": [server.get("inference_p50_ms"), server.get("inference_p99_ms")],
            "tick_jitter_ms": [executor.get("jitter_p50_ms"), executor.get("jitter_p99_ms")],
            "interventions": {
                k: int(v) for k, v in executor.items() if k.startswith("intervention.")
            },
            "holds": {k: int(v) for k, v in executor.items() if k.startswith("hold.")},
            # Frames rendered of those due at camera_hz (real time skips a frame while the last
            # renders), and frames received of those published (the transport).
            "camera_rendered": published / max(published + skipped, 1),
            "camera_delivery": received / max(published, 1) if self.params["video_topic"] else None,
            "records": records,
        }

    def report(self, summary: dict[str, Any]) -> None:
        low, high = summary["interval95"]
        timing = (
            ""
            if summary["realtime"]
            else " (fast mode: wall time of a lockstep run, not the robot's)"
        )
        latency = summary["obs_to_chunk_ms"]
        lines = [
            f"success: {summary['successes']}/{summary['episodes']} = "
            f"{summary['success_rate']:.1%} (95% interval {low:.1%}-{high:.1%})",
            "observation-to-chunk latency p50/p99: "
            + ("{} / {} ms".format(*latency) if summary["realtime"] else "n/a in sim time"),
            "request-to-chunk latency p50/p99: {} / {} ms".format(*summary["request_to_chunk_ms"])
            + timing,
            "inference p50/p99: {} / {} ms".format(*summary["inference_ms"]),
            "control tick jitter p50/p99: {} / {} ms".format(*summary["tick_jitter_ms"]) + timing,
            f"safety interventions: {summary['interventions'] or 'none'}",
            f"holds (ticks): {summary['holds'] or 'none'}",
        ]
        if summary["camera_delivery"] is not None:
            lines.append(
                f"camera frames: {summary['camera_rendered']:.1%} of those due rendered, "
                f"{summary['camera_delivery']:.1%} of those published received"
            )
        for line in lines:
            print(line, flush=True)
        out = self.params["out"]
        if out:
            directory = Path(out)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "episodes.json").write_text(json.dumps(summary, indent=2))
            if self._frames:
                from policy_runtime.evaluation.evaluate import write_video

                video = directory / "episode_0.mp4"
                write_video(video, np.stack(self._frames), self.params["camera_hz"])
                print(f"video: {video}", flush=True)


def main() -> None:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init()
    try:
        runner = EpisodeRunner()
    except ValueError as exc:
        print(f"error: {exc}", flush=True)
        raise SystemExit(2) from None
    executor = SingleThreadedExecutor()
    executor.add_node(runner)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        while not runner.done.is_set():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        runner.exit_code = 130
    runner.destroy_node()
    rclpy.try_shutdown()
    raise SystemExit(runner.exit_code)
