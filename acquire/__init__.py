"""Acquisition: tilt schemes, backlash planning, the microscope bridge, the executor, sessions and the frame stream."""
