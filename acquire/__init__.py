"""Acquisition, and the torch-free base every other package builds on.

acquire/ drives the microscope: tilt schemes (``scheme``, ``backlash``, ``plan_summary``), the temscript
bridge client (``bridge``, ``microscope``), the executor with tracking and focus (``executor``,
``corrections``, ``tracking``, ``focus``), dose and temperature (``dose``, ``temperature``), recorded
sessions (``session``, ``imod_export``), the frame stream (``stream``, ``publisher``, ``subscriber``) and
the tracker's link to the live model (``model_link``).
It imports no torch, kornia or Qt, so it is the whole of the core install on the microscope PC
(``pip install tiltstream``), and simulator/, recon/ and live/ import from it, never the reverse.

The shared modules of that base, one of each:

- ``acquire.errors``: :class:`~acquire.errors.UserError`, the one-line failure of bad input;
- ``acquire.config``: every process's settings (pydantic-settings: TOML, ``TILTSTREAM_*``, command line);
- ``acquire.progress``: :class:`~acquire.progress.ProgressLine`, the one progress line;
- ``acquire.atomic_files``: atomic, durable file replacement;
- ``acquire.log_setup``: :func:`~acquire.log_setup.configure_logging`, the one logging set-up;
- ``acquire.stream``: the wire codec and the pydantic model of every message on the frame stream.
"""
