"""Settings of ``tiltstream acquire`` (one pydantic model; defaults also in config/microscope.toml)."""

from __future__ import annotations

from typing import Literal

import pydantic

from tiltstream.acquire.tilt_range import MaxTiltDeg, MinTiltDeg, TiltRange


class AcquireSettings(TiltRange):
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
    min_deg: MinTiltDeg
    max_deg: MaxTiltDeg
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
    tilt_axis_deg: float | None = pydantic.Field(
        None, ge=-180.0, le=180.0, description="the tilt axis's angle in this detector's image, degrees, from "
        "the microscope's calibration (IMOD's and SerialEM's convention, SerialEM's TiltAxisAngle; 0: the "
        "axis along the image y, docs/design.md 2); recorded in session.json so that recon align and "
        "--preprocess real use it (unset: not recorded, they estimate it from the frames)")
    image_size: Literal["FULL", "HALF", "QUARTER"] = pydantic.Field("FULL", description="part of the detector "
                                                                                        "field to read")
    binning: int = pydantic.Field(1, ge=1, description="binning factor, pixels")
    dwell_time_s: float = pydantic.Field(1.6e-6, gt=0, description="STEM dwell time per pixel, seconds")
    exposure_s: float = pydantic.Field(1.0, ge=0, description="camera exposure time, seconds (camera detectors)")
    beam_current_pA: float = pydantic.Field(60.0, ge=0, description="beam current for the dose, picoampere, "
                                            "used only when the microscope reports no screen current")
    pixel_size_nm: float = pydantic.Field(0.44, gt=0, description="unbinned pixel size at the specimen, "
                                          "nanometres, used only when the microscope reports none")
    # tracking and focus (docs/design.md 4: image shift, probe defocus, stage x/y only, within these limits)
    track: Literal["off", "previous", "model"] = pydantic.Field(
        "off", description="tracking between frames: off, previous (cross-correlation with the recorded frames "
        "nearest in angle) or model (with the live reconstruction's reprojection, else previous)")
    centre: bool | None = pydantic.Field(
        None, description="bring the specimen to the frame centre from the second frame on (the first frame's "
        "centre of mass, by image shift within its limit; the first GRS jumps pre-corrected from the centroids' "
        "height fit); needs --track (unset: on when tracking)")
    focus: Literal["off", "tilt-model", "measure"] = pydantic.Field(
        "off", description="focus between frames: off, tilt-model (probe defocus follows the fitted eucentric "
        "height; no dose) or measure (tilt-model plus a 5-scan sharpness sweep every focus_every frames: "
        "5 extra frames of dose and time per sweep)")
    focus_every: int = pydantic.Field(10, ge=1, description="--focus measure: frames between sharpness sweeps")
    focus_step_nm: float = pydantic.Field(50.0, gt=0, description="--focus measure: defocus step of a sweep, "
                                                                  "nanometres")
    model_endpoint: str | None = pydantic.Field(None, description="the live process's reprojection request "
                                                                  "endpoint for --track model, e.g. tcp://127.0.0.1:5557")
    model_timeout_s: float = pydantic.Field(0.5, gt=0, description="longest wait for a reprojection, seconds "
                                                                   "(then the previous frames are the reference)")
    lost_quality: float = pydantic.Field(0.3, ge=-1, le=1, description="correlation peak below which tracking has "
                                                                       "lost the specimen, -1..1")
    pause_on_lost: bool = pydantic.Field(False, description="pause the run (beam blanked) when tracking loses the "
                                                            "specimen")
    image_shift_limit_nm: float = pydantic.Field(2000.0, ge=0, description="largest |image shift| per axis a "
                                                                         "correction may set, nanometres")
    stage_xy_travel_nm: float = pydantic.Field(5000.0, ge=0, description="largest stage x/y move from the run's "
                                                                       "start a correction may make, nanometres")
    defocus_limit_nm: float = pydantic.Field(2000.0, ge=0, description="largest |probe defocus| a correction "
                                                                     "may set, nanometres")
    # stream
    publish: str | None = pydantic.Field(None, description="ZeroMQ endpoint to publish frames on, e.g. "
                                                           "tcp://127.0.0.1:5555 (unset: no stream)")
    resend: str | None = pydantic.Field(None, description="ZeroMQ endpoint of the resend service for "
                                                          "consumers on other machines (unset: none)")
    curve_secret_key: str | None = pydantic.Field(None, description="CURVE secret certificate file "
                                                                    "(zmq.auth) to encrypt the stream")

    @pydantic.model_validator(mode="after")
    def _check(self) -> AcquireSettings:
        if self.resend is not None and self.publish is None:
            raise ValueError("a resend endpoint needs a publish endpoint")
        if self.centre and self.track == "off":
            raise ValueError("--centre needs --track previous or model (it moves the specimen by the tracking "
                             "corrections)")
        if self.track == "model" and self.model_endpoint is None:
            raise ValueError("--track model needs --model-endpoint (the live process's request endpoint)")
        return self
