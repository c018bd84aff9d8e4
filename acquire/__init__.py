"""Acquisition, and the torch-free base every other package builds on.

acquire/ drives the microscope: tilt schemes (``scheme``, ``backlash``, ``plan_summary``), the temscript
bridge client (``bridge``, ``microscope``), the executor with tracking and focus (``executor``,
``corrections``, ``tracking``, ``focus``), dose and temperature (``dose``, ``temperature``), recorded
sessions (``session``, ``imod_export``), the frame stream (``stream``, ``publisher``, ``subscriber``) and
the tracker's link to the live model (``model_link``).
It imports no torch, kornia or Qt, so it is the whole of the core install on the microscope PC
(``pip install tiltstream``), and simulator/, recon/ and live/ import from it, never the reverse.

The shared modules of that base, one of each:

- ``tiltstream.errors``: :class:`~tiltstream.errors.UserError`, the one-line failure of bad input;
- ``tiltstream.config``: every process's settings (pydantic-settings: TOML, ``TILTSTREAM_*``, command line);
- ``tiltstream.progress``: :class:`~tiltstream.progress.ProgressLine`, the one progress line;
- ``tiltstream.atomic_files``: atomic, durable file replacement;
- ``tiltstream.log_setup``: :func:`~tiltstream.log_setup.configure_logging`, the one logging set-up;
- ``tiltstream.acquire.stream``: the wire codec and the pydantic model of every message on the frame stream.
"""
