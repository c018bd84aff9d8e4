"""A recorded session's frames, checked for reconstruction: present, one shape, finite.

The source of recorded frames for ``recon train`` and the benches, which add them with
:func:`tiltstream.recon.frame_feed.add_recorded_frame` as the live process adds streamed ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tiltstream.errors import UserError
from tiltstream.acquire.session import Session, read_session


def load_session_frames(path: Path | str) -> tuple[Session, np.ndarray]:
    """A recorded session and its frames (n, ny, nx) float32, in record order.

    Raises
    ------
    UserError
        One line for a missing or empty session, mixed frame shapes, or NaN/infinite frames.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"session {str(path)!r} does not exist")
    session = read_session(path)
    if not session.records:
        raise UserError(f"session {str(path)!r} has no frames yet; nothing to reconstruct")
    shapes = sorted({tuple(r.shape) for r in session.records})
    if len(shapes) > 1:
        raise UserError(f"session {str(path)!r} mixes frame shapes {shapes}; all frames must have one "
                        "shape (ny, nx)")
    frames = session.load_frames()
    bad = [r.index for r, f in zip(session.records, frames) if not np.isfinite(f).all()]
    if bad:
        raise UserError(f"session {str(path)!r}: frame(s) {bad[:5]} contain NaN or infinite values; "
                        "clean or drop them")
    return session, frames
