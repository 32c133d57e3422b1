"""The sim bridge's ROS 2 node: the only part of sim_bridge that imports rclpy."""
