"""Simulator: dynamic phantoms, synthetic tilt series and a simulated microscope behind the temscript bridge."""
