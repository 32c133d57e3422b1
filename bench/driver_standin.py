"""The UR driver's timing without its physics, for ``bench.command_gaps``.

    python -m bench.driver_standin --rate 500 --seconds 600 --out gaps.npz

One process, like ``ur_robot_driver``: a SCHED_FIFO thread runs the controller cycle from a sleep
loop (ros2_control's update loop), each cycle taking the newest position command as the arm's
position (a perfect servo) and publishing ``/joint_states`` and ``/tcp_pose_broadcaster/pose``;
``robot_program_running`` is latched true and the speed scaling 100%. For the policy it also
publishes a push_t scene's block state on ``/sim_bridge/task_state`` (frozen: there is no
physics). The commands are received on a SCHED_FIFO thread too, stamped on arrival. From
``--warmup`` seconds after the first command on, it runs ``--seconds`` and writes the arrival
times of the commands and the publication times of the joint states (monotonic s) to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from pathlib import Path

import numpy as np

from policy_runtime.execution.realtime import raise_process_priority


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """The arm's start joints and the block's keypoints of push_t's first test episode."""
    from sim_bridge.env import make_env

    env = make_env("push_t", cameras=())
    observation = env.reset(100_000)
    return env.commanded_joints.copy(), observation["block_keypoints"].astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--priority", type=int, default=90)
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds after the first command not measured"
    )
    args = parser.parse_args()

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, Float64, Float64MultiArray

    from policy_runtime.execution.kinematics import EeToJoint
    from policy_runtime.robots.poses import quaternion_from_matrix
    from policy_runtime.robots.ur5 import JOINT_NAMES
    from policy_runtime.ros import qos
    from policy_runtime.ros.messages import BASE_FRAME, stamp

    q, keypoints = _scene()
    kinematics = EeToJoint()
    rclpy.init()
    node = rclpy.create_node("ur_driver_standin")
    pub_joints = node.create_publisher(JointState, "/joint_states", qos.STREAM)
    pub_tcp = node.create_publisher(PoseStamped, "/tcp_pose_broadcaster/pose", qos.STREAM)
    pub_task = node.create_publisher(JointState, "/sim_bridge/task_state", qos.STREAM)
    pub_scaling = node.create_publisher(
        Float64, "/speed_scaling_state_broadcaster/speed_scaling", qos.STREAM
    )
    pub_program = node.create_publisher(
        Bool, "/io_and_status_controller/robot_program_running", qos.LATCHED
    )
    pub_program.publish(Bool(data=True))
    lock = threading.Lock()
    newest: list[np.ndarray] = []
    arrivals: list[float] = []
    published: list[float] = []
    stop = threading.Event()

    def on_command(msg: Float64MultiArray) -> None:
        now = time.monotonic()
        with lock:
            arrivals.append(now)
            if len(msg.data) == 6:
                newest[:] = [np.asarray(msg.data, dtype=np.float64)]

    node.create_subscription(
        Float64MultiArray, "/forward_position_controller/commands", on_command, qos.STREAM
    )
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    def cycle_loop() -> None:
        nonlocal q
        period = 1.0 / args.rate
        task = JointState(name=[f"block_keypoints/{i}" for i in range(len(keypoints))])
        task.position = keypoints.tolist()
        next_tick, k = time.monotonic(), 0
        while not stop.is_set():
            with lock:
                target = newest[0] if newest else q
            velocity = (target - q) / period
            q = target
            now = time.time()
            joints = JointState(name=list(JOINT_NAMES), position=q.tolist())
            joints.velocity = velocity.tolist()
            joints.header.stamp = stamp(now)
            pub_joints.publish(joints)
            published.append(time.monotonic())
            tcp = kinematics.forward(q)
            pose = PoseStamped()
            pose.header.stamp, pose.header.frame_id = joints.header.stamp, BASE_FRAME
            p, o = pose.pose.position, pose.pose.orientation
            p.x, p.y, p.z = tcp[:3, 3].tolist()
            o.x, o.y, o.z, o.w = quaternion_from_matrix(tcp[:3, :3]).tolist()
            pub_tcp.publish(pose)
            task.header.stamp = joints.header.stamp
            pub_task.publish(task)
            if k % max(1, round(args.rate / 10)) == 0:
                pub_scaling.publish(Float64(data=100.0))
            k += 1
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                next_tick = time.monotonic()  # late by over a period: no catching up

    gc.collect()
    gc.freeze()  # start-up's objects out of the collector's scans, as the executor does
    threads = [threading.Thread(target=f, daemon=True) for f in (spin, cycle_loop)]
    for thread in threads:
        thread.start()
    # Every thread, the middleware's included (the real driver's control thread runs RT).
    problem = raise_process_priority(args.priority)
    if problem:
        print(f"driver stand-in: {problem}", flush=True)
    while True:
        with lock:
            first = arrivals[0] if arrivals else None
        if first is not None:
            break
        time.sleep(0.1)
    first += args.warmup  # every participant matched, the policy serving
    time.sleep(max(0.0, first + args.seconds - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(timeout=2.0)
    with lock:
        commands = np.asarray(arrivals)
    joint_states = np.asarray(published)
    end = first + args.seconds
    np.savez(
        args.out,
        commands=commands[(commands >= first) & (commands <= end)],
        joint_states=joint_states[(joint_states >= first) & (joint_states <= end)],
    )
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
