"""The tilt range of a planned tilt series, declared once for every settings model that takes one.

``tiltstream acquire``, ``scheme`` and ``sim tiltseries`` annotate ``min_deg: MinTiltDeg`` and
``max_deg: MaxTiltDeg`` where their options are listed, and inherit the ``min_deg < max_deg`` check
from :class:`TiltRange`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import pydantic

MinTiltDeg = Annotated[float, pydantic.Field(-70.0, allow_inf_nan=False,
                                             description="lowest tilt angle of the scheme (deg)")]
MaxTiltDeg = Annotated[float, pydantic.Field(70.0, allow_inf_nan=False,
                                             description="highest tilt angle of the scheme (deg)")]


class TiltRange(pydantic.BaseModel):
    """Base of a settings model with fields ``min_deg: MinTiltDeg`` and ``max_deg: MaxTiltDeg``: checks min < max."""

    if TYPE_CHECKING:  # declared by the subclass, at the place of its choice among its options
        min_deg: float
        max_deg: float

    @pydantic.model_validator(mode="after")
    def _check_tilt_range(self) -> TiltRange:
        if not self.min_deg < self.max_deg:
            raise ValueError(f"min_deg {self.min_deg} deg must be below max_deg {self.max_deg} deg")
        return self
