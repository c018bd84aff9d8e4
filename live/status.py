"""The status stream of the live reconstruction: topics, pydantic headers, encode/decode (docs/design.md 6).

The live process publishes four kinds of message on its PUB socket, each ``[topic, header, buffer]``
of :mod:`tiltstream.wire`: ``status`` (:class:`StatusHeader`, no buffer), ``reprojection``
(:class:`ReprojectionHeader`, float32 ``(2, ny, nx)``: the measured frame, then the current model's
reprojection at its angle and time), ``orthoslices`` (:class:`OrthosliceHeader`, float32: the central
``xy`` ``(ny, nx)``, ``xz`` ``(nz, nx)`` and ``yz`` ``(nz, ny)`` slices concatenated) and ``history``
(:class:`HistoryHeader`, no buffer: per-frame metadata and tracking, the loss and held-out error
curves, so a late viewer can draw the whole session). A :class:`VolumeRequest` to the ROUTER endpoint
named in every status message (``volume_endpoint``) is answered with one ``orthoslices`` message.
The live process builds typed messages (:func:`make_reprojection`, :func:`make_orthoslices`, the
headers) and encodes each once with :func:`encode_message`; an in-process snapshot renderer takes the
typed message itself, never a decoded copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pydantic

from tiltstream.acquire.session import TrackingRecord
from tiltstream.recon.metrics import reprojection_error_percent
from tiltstream.wire import WIRE_VERSION, ArrayHeader, WireError, decode_array, decode_header, encode

TOPIC_STATUS = b"status"
TOPIC_REPROJECTION = b"reprojection"
TOPIC_ORTHOSLICES = b"orthoslices"
TOPIC_HISTORY = b"history"
TOPIC_VOLUME_REQUEST = b"volume-request"
STATUS_TOPICS = (TOPIC_STATUS, TOPIC_REPROJECTION, TOPIC_ORTHOSLICES, TOPIC_HISTORY)


class StatusHeader(pydantic.BaseModel):
    """Progress of the live reconstruction (topic ``status``, no buffer)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = WIRE_VERSION
    session: str = pydantic.Field(description="session name")
    frames_seen: int = pydantic.Field(ge=0, description="frames received from the stream (and catch-up)")
    frames_in_model: int = pydantic.Field(ge=0, description="frames added to the trainer")
    frames_expected: int | None = pydantic.Field(default=None, description="frames in the session, if known")
    step: int = pydantic.Field(ge=0, description="training steps done")
    loss: float | None = pydantic.Field(default=None, description="mean loss of the last chunk of steps")
    steps_per_s: float = pydantic.Field(ge=0, description="training rate over the last chunk, steps/s")
    lag_frames: int = pydantic.Field(ge=0, description="frames received but not yet in the model")
    lag_s: float = pydantic.Field(ge=0, description="seconds the oldest waiting frame has waited, 0 when caught up")
    time_min_s: float | None = pydantic.Field(default=None, description="earliest frame time in the model, s")
    time_max_s: float | None = pydantic.Field(default=None, description="latest frame time in the model, s")
    volume_endpoint: str | None = pydantic.Field(default=None, description="ROUTER endpoint for volume requests")
    state: Literal["waiting", "training", "finished", "stopped"] = "training"
    method: str = pydantic.Field(default="dipster", description="reconstruction method (run.json's method)")
    tracking: str | None = pydantic.Field(
        default=None, description="the latest tracked frame in words (source, shift, defocus, or that the "
        "specimen was lost); None when no frame carries tracking")
    tracking_lost: bool = pydantic.Field(
        default=False, description="the latest tracked frame's correlation peak was below the tracker's "
        "threshold: tracking lost the specimen")


class ReprojectionHeader(ArrayHeader):
    """A measured frame and its reprojection by the current model (topic ``reprojection``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    frame_index: int = pydantic.Field(ge=0, description="index of the measured frame")
    angle_deg: float = pydantic.Field(description="tilt angle of the frame, degrees")
    time_s: float = pydantic.Field(description="frame time, seconds since session start")
    step: int = pydantic.Field(ge=0, description="training step of the model that reprojected")
    error_percent: float = pydantic.Field(description="RMS of reprojection - measured over the RMS of measured, "
                                          "percent (tiltstream.recon.metrics.reprojection_error_percent)")
    shape: tuple[int, int, int]

    @pydantic.model_validator(mode="after")
    def _two_layers(self) -> ReprojectionHeader:
        if self.shape[0] != 2 or self.dtype != "float32":
            raise ValueError("a reprojection buffer is float32 (2, ny, nx): measured, reprojection")
        return self


class OrthosliceHeader(ArrayHeader):
    """Central orthoslices of the volume at one time (topic ``orthoslices``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    time_s: float = pydantic.Field(description="time of the volume, seconds since session start")
    step: int = pydantic.Field(ge=0, description="training step of the model")
    volume_shape: tuple[int, int, int] = pydantic.Field(description="(nz, ny, nx), voxels")
    request_id: int | None = pydantic.Field(default=None, description="the request answered, None if broadcast")
    shape: tuple[int]

    @pydantic.model_validator(mode="after")
    def _sizes(self) -> OrthosliceHeader:
        nz, ny, nx = self.volume_shape
        if self.dtype != "float32" or self.shape[0] != ny * nx + nz * nx + nz * ny:
            raise ValueError(f"an orthoslice buffer is float32 of ny*nx + nz*nx + nz*ny values "
                             f"for volume_shape {self.volume_shape}")
        return self


TRACKING_FIELDS = ("shift_x_px", "shift_y_px", "defocus_m", "tracking_lost")  # HistoryHeader's per-frame tracking


class HistoryHeader(pydantic.BaseModel):
    """The session so far (topic ``history``, no buffer); lists are aligned per frame / per loss point."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = WIRE_VERSION
    session: str
    frame_index: list[int] = pydantic.Field(default_factory=list)
    time_s: list[float] = pydantic.Field(default_factory=list, description="frame times, s")
    angle_deg: list[float] = pydantic.Field(default_factory=list, description="frame tilt angles, degrees")
    dose_e_per_A2: list[float] = pydantic.Field(default_factory=list, description="dose per frame, e/A^2")
    temperature_C: list[float | None] = pydantic.Field(default_factory=list, description="Celsius or None")
    loss_step: list[int] = pydantic.Field(default_factory=list, description="training step of each loss point")
    loss: list[float] = pydantic.Field(default_factory=list, description="mean loss at that step")
    heldout_step: list[int] = pydantic.Field(default_factory=list,
                                             description="training step of each held-out evaluation")
    heldout_rmse_percent: list[float] = pydantic.Field(
        default_factory=list, description="held-out frames' reprojection error at that step, percent")
    shift_x_px: list[float | None] = pydantic.Field(
        default_factory=list, description="per frame: tracking's measured specimen shift x (perpendicular to "
        "the tilt axis) relative to the first tracked frame, px; None when untracked or lost (empty: no tracking)")
    shift_y_px: list[float | None] = pydantic.Field(
        default_factory=list, description="per frame: the same along y (the tilt axis), px")
    defocus_m: list[float | None] = pydantic.Field(
        default_factory=list, description="per frame: probe defocus applied during the frame, m (None: focus off)")
    tracking_lost: list[bool] = pydantic.Field(
        default_factory=list, description="per frame: tracking lost the specimen (peak below the threshold)")

    @pydantic.model_validator(mode="after")
    def _tracking_per_frame(self) -> HistoryHeader:
        for name in TRACKING_FIELDS:
            values = getattr(self, name)
            if values and len(values) != len(self.frame_index):
                raise ValueError(f"{name} has {len(values)} values for {len(self.frame_index)} frames "
                                 "(give one per frame, or none)")
        return self


def tracking_history(indices: Sequence[int], known: Mapping[int, TrackingRecord]) -> dict[str, list]:
    """:class:`HistoryHeader`'s per-frame tracking lists for frames ``indices`` from their tracking records
    (``known``: frame index -> record); empty when none of the frames is tracked."""
    if not any(i in known for i in indices):
        return {}
    records = [known.get(i) for i in indices]
    return {"shift_x_px": [None if t is None or t.shift_px is None else t.shift_px[0] for t in records],
            "shift_y_px": [None if t is None or t.shift_px is None else t.shift_px[1] for t in records],
            "defocus_m": [None if t is None else t.defocus_m for t in records],
            "tracking_lost": [t is not None and t.lost for t in records]}


class VolumeRequest(pydantic.BaseModel):
    """A viewer's request for the orthoslices at one time (sent to the ROUTER endpoint)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    v: int = WIRE_VERSION
    request_id: int = pydantic.Field(ge=0)
    time_s: float = pydantic.Field(description="requested time, seconds since session start")


class Orthoslices(pydantic.BaseModel):
    """Decoded orthoslices: header plus the three float32 slices."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True, frozen=True)
    header: OrthosliceHeader
    xy: np.ndarray
    xz: np.ndarray
    yz: np.ndarray


class Reprojection(pydantic.BaseModel):
    """Decoded reprojection: header plus measured frame, reprojection and residual (ny, nx) float32."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True, frozen=True)
    header: ReprojectionHeader
    measured: np.ndarray
    reprojection: np.ndarray

    @property
    def residual(self) -> np.ndarray:
        """measured - reprojection, (ny, nx)."""
        return self.measured - self.reprojection


StatusMessage = StatusHeader | Reprojection | Orthoslices | HistoryHeader


def central_orthoslices(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central ``xy`` (ny, nx), ``xz`` (nz, nx) and ``yz`` (nz, ny) slices of a volume (nz, ny, nx)."""
    nz, ny, nx = volume.shape
    return (np.ascontiguousarray(volume[nz // 2], dtype=np.float32),
            np.ascontiguousarray(volume[:, ny // 2, :], dtype=np.float32),
            np.ascontiguousarray(volume[:, :, nx // 2], dtype=np.float32))


def make_reprojection(session: str, frame_index: int, angle_deg: float, time_s: float, step: int,
                      measured: np.ndarray, reprojection: np.ndarray) -> Reprojection:
    """A typed ``reprojection`` message from a measured frame and its reprojection, both (ny, nx)."""
    measured = np.asarray(measured, dtype=np.float32)
    reprojection = np.asarray(reprojection, dtype=np.float32)
    if measured.shape != reprojection.shape or measured.ndim != 2:
        raise ValueError(f"measured {measured.shape} and reprojection {reprojection.shape} must be equal (ny, nx)")
    error = reprojection_error_percent(measured, reprojection)
    header = ReprojectionHeader(session=session, dtype="float32", shape=(2, *measured.shape),
                                frame_index=frame_index, angle_deg=angle_deg, time_s=time_s, step=step,
                                error_percent=error)
    return Reprojection(header=header, measured=measured, reprojection=reprojection)


def make_orthoslices(session: str, volume: np.ndarray, time_s: float, step: int,
                     request_id: int | None = None) -> Orthoslices:
    """A typed ``orthoslices`` message with the central slices of ``volume`` (nz, ny, nx) at ``time_s``."""
    xy, xz, yz = central_orthoslices(volume)
    header = OrthosliceHeader(session=session, dtype="float32", shape=(xy.size + xz.size + yz.size,),
                              time_s=time_s, step=step, volume_shape=volume.shape, request_id=request_id)
    return Orthoslices(header=header, xy=xy, xz=xz, yz=yz)


def encode_message(message: StatusMessage) -> list[bytes | memoryview]:
    """The wire parts of any typed status-stream message (the inverse of :func:`decode_status_message`)."""
    if isinstance(message, StatusHeader):
        return encode(TOPIC_STATUS, message)
    if isinstance(message, HistoryHeader):
        return encode(TOPIC_HISTORY, message)
    if isinstance(message, Reprojection):
        return encode(TOPIC_REPROJECTION, message.header, np.stack([message.measured, message.reprojection]))
    if isinstance(message, Orthoslices):
        flat = np.concatenate([message.xy.ravel(), message.xz.ravel(), message.yz.ravel()])
        return encode(TOPIC_ORTHOSLICES, message.header, flat)
    raise TypeError(f"not a status-stream message: {type(message).__name__}")


def encode_volume_request(request_id: int, time_s: float) -> list[bytes]:
    """A volume request (topic ``volume-request``, JSON header, empty buffer)."""
    return [TOPIC_VOLUME_REQUEST, VolumeRequest(request_id=request_id, time_s=time_s).model_dump_json().encode(), b""]


def _validate(model: type[pydantic.BaseModel], raw: dict[str, Any]) -> Any:
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or model.__name__
        raise WireError(f"invalid {model.__name__} field {where}: {err['msg']}") from None


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise WireError(f"{what} contains NaN or infinite values")
    return array


def decode_status_message(parts: list[bytes]) -> StatusMessage:
    """Decode any status-stream message into its typed form.

    Raises
    ------
    WireError
        Unknown topic, bad JSON, a header that fails validation, a wrong buffer size, non-finite data.
    """
    topic, raw = decode_header(parts)
    if topic == TOPIC_STATUS:
        return _validate(StatusHeader, raw)
    if topic == TOPIC_HISTORY:
        return _validate(HistoryHeader, raw)
    if topic == TOPIC_REPROJECTION:
        header = _validate(ReprojectionHeader, raw)
        stack = _finite(decode_array(header, parts[2]), f"reprojection of frame {header.frame_index}")
        return Reprojection(header=header, measured=stack[0], reprojection=stack[1])
    if topic == TOPIC_ORTHOSLICES:
        header = _validate(OrthosliceHeader, raw)
        flat = _finite(decode_array(header, parts[2]), "orthoslices")
        nz, ny, nx = header.volume_shape
        xy = flat[:ny * nx].reshape(ny, nx)
        xz = flat[ny * nx:ny * nx + nz * nx].reshape(nz, nx)
        yz = flat[ny * nx + nz * nx:].reshape(nz, ny)
        return Orthoslices(header=header, xy=xy, xz=xz, yz=yz)
    raise WireError(f"unknown status topic {topic!r}; expected one of "
                    f"{', '.join(t.decode() for t in STATUS_TOPICS)}")


def decode_volume_request(parts: list[bytes]) -> VolumeRequest:
    """Decode a volume request; :class:`WireError` when malformed."""
    _, raw = decode_header(parts, TOPIC_VOLUME_REQUEST)
    return _validate(VolumeRequest, raw)

