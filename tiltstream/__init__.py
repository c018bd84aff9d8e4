"""tiltstream: live dynamic electron tomography next to the microscope.

This package is the torch-free base every role builds on (the console command, errors, settings,
progress, atomic files, logging, the wire codec); the roles are its subpackages ``acquire``, ``recon``,
``live`` and ``simulator`` (docs/design.md 1).
"""
