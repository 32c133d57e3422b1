"""ROS 2 adapters of the calibration core (the calibrate node)."""
