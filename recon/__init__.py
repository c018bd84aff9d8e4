"""Reconstruction: projector, DIP-STER model and trainer, moving-window SIRT, metrics, preprocessing, export."""
