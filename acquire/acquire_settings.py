"""Settings of ``tiltstream acquire`` (one pydantic model; defaults also in config/microscope.toml)."""

from __future__ import annotations

from typing import Literal

import pydantic


class AcquireSettings(pydantic.BaseModel):
    """Bridge, scheme, detector, dose, stage and stream settings of one acquisition process."""

    model_config = pydantic.ConfigDict(extra="forbid")

    # bridge
    bridge: str = pydantic.Field("http://127.0.0.1:8080", description="temscript bridge URL, http://HOST:PORT")
    bridge_timeout_s: float = pydantic.Field(10.0, gt=0, description="socket timeout of one bridge call, seconds")
    retries: int = pydantic.Field(4, ge=1, description="tries per bridge call before the run ends (1: no retry)")
    retry_backoff_s: float = pydantic.Field(0.2, ge=0, description="wait before the first retry, seconds "
                                                                     "(doubles each time, at most 5 s)")
    # scheme
    scheme: Literal["grs", "incremental", "dose-symmetric"] = pydantic.Field("grs", description="tilt scheme")
    count: int | None = pydantic.Field(None, ge=1, description="number of frames in the session "
                                                               "(unset: until Ctrl-C or a stop request)")
    min_deg: float = pydantic.Field(-70.0, allow_inf_nan=False, description="lowest tilt angle, degrees")
    max_deg: float = pydantic.Field(70.0, allow_inf_nan=False, description="highest tilt angle, degrees")
    # stage
    backlash_deg: float = pydantic.Field(2.0, ge=0, description="overshoot below a target approached from "
                                                                "above, degrees (0: correction off)")
    angle_tolerance_deg: float = pydantic.Field(0.05, gt=0, description="largest allowed |reported - target| "
                                                                        "angle, degrees")
    stage_timeout_s: float = pydantic.Field(60.0, gt=0, description="longest wait for READY after a move, seconds")
    stage_speed: float | None = pydantic.Field(None, gt=0, description="stage speed factor (1.0 = default "
                                                                        "speed; unset: not sent)")
    # detector and dose
    detector: str = pydantic.Field("HAADF", min_length=1, description="detector name (HAADF, BF, CCD, ...)")
    image_size: Literal["FULL", "HALF", "QUARTER"] = pydantic.Field("FULL", description="part of the detector "
                                                                                        "field to read")
    binning: int = pydantic.Field(1, ge=1, description="binning factor, pixels")
    dwell_time_s: float = pydantic.Field(1.6e-6, gt=0, description="STEM dwell time per pixel, seconds")
    exposure_s: float = pydantic.Field(1.0, ge=0, description="camera exposure time, seconds (camera detectors)")
    beam_current_pA: float = pydantic.Field(60.0, ge=0, description="beam (screen) current for the dose, "
                                                                     "picoampere")
    pixel_size_nm: float = pydantic.Field(0.44, gt=0, description="pixel size at the specimen, nanometres")
    # stream
    publish: str | None = pydantic.Field(None, description="ZeroMQ endpoint to publish frames on, e.g. "
                                                           "tcp://127.0.0.1:5555 (unset: no stream)")
    resend: str | None = pydantic.Field(None, description="ZeroMQ endpoint of the resend service for "
                                                          "consumers on other machines (unset: none)")
    curve_secret_key: str | None = pydantic.Field(None, description="CURVE secret certificate file "
                                                                    "(zmq.auth) to encrypt the stream")

    @pydantic.model_validator(mode="after")
    def _check(self) -> AcquireSettings:
        if not self.min_deg < self.max_deg:
            raise ValueError(f"min_deg {self.min_deg} deg must be below max_deg {self.max_deg} deg")
        if self.resend is not None and self.publish is None:
            raise ValueError("a resend endpoint needs a publish endpoint")
        return self
