"""Acquisition: tilt schemes, the microscope bridge, the executor with tracking and focus, sessions, the frame stream.

acquire/ drives the microscope: tilt schemes (``scheme``, ``backlash``, ``plan_summary``), the temscript
bridge client (``bridge``, ``microscope``), the executor with tracking and focus (``executor``,
``corrections``, ``tracking``, ``focus``), dose and temperature (``dose``, ``temperature``), recorded
sessions (``session``, ``imod_export``), the frame stream (``stream``, ``publisher``, ``subscriber``) and
the tracker's link to the live model (``model_link``). It imports no torch, kornia or Qt, so with the
base package ``tiltstream`` it is the whole core install on the microscope PC (docs/design.md 1).
"""
