"""The microscope over the temscript v1 HTTP bridge: :class:`BridgeMicroscope` implements :class:`tiltstream.acquire.microscope.Microscope`.

The client is ``temscript.RemoteMicroscope`` (SI units on the wire); this module converts to degrees at
its surface, retries transport failures and server errors with exponential backoff (reconnecting), and
turns what cannot be recovered into one :class:`BridgeError` line. It handles STEM detectors and
cameras, keeps the detector's dtype, and reads the pixel size and beam current for the record. The
calls it uses and what it reads: docs/design.md 4.
"""

from __future__ import annotations

import http.client
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from tiltstream.errors import MicroscopeFault, UserError
from tiltstream.acquire.microscope import AcquisitionParams, DetectorInfo
from tiltstream.acquire.session import StagePosition

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Failures worth another try: the network, the HTTP layer, a server-side error (HTTP 500).
TRANSIENT = (OSError, http.client.HTTPException, RuntimeError)


#: Every temscript call this client may make (its allow-list): stage, beam blanking, detectors and
#: acquisition, two reads for the record (screen current, indicated magnification), and for tracking and focus only image shift and probe defocus. Column valves, lenses,
#: beam shift/tilt and everything else are refused before anything is sent.
ALLOWED_CALLS = frozenset({
    "get_version", "get_stage_position", "set_stage_position", "get_stage_status", "get_stage_limits",
    "get_beam_blanked", "set_beam_blanked", "get_cameras", "get_stem_detectors", "get_camera_param",
    "set_camera_param", "get_stem_acquisition_param", "set_stem_acquisition_param", "acquire",
    "get_image_shift", "set_image_shift", "get_probe_defocus", "set_probe_defocus",
    "get_screen_current", "get_indicated_magnification",
})
STAGE_AXES = frozenset({"a", "x", "y", "z"})  # beta is never moved


class NotAllowed(UserError):
    """A call outside :data:`ALLOWED_CALLS` (or a stage move of another axis); nothing was sent."""


class AllowListedRemote:
    """A ``temscript.RemoteMicroscope`` that only lets :data:`ALLOWED_CALLS` through (stage moves: a, x, y, z)."""

    def __init__(self, remote: Any) -> None:
        self._remote = remote

    def __getattr__(self, name: str) -> Any:
        if name not in ALLOWED_CALLS:
            raise NotAllowed(f"bridge call {name!r} is not on tiltstream's allow-list; nothing was sent")
        method = getattr(self._remote, name)
        if name != "set_stage_position":
            return method

        def set_stage_position(pos: dict[str, float], **kwargs: Any) -> Any:
            others = sorted(set(pos) - STAGE_AXES)
            if others:
                raise NotAllowed(f"stage axes {others} are not on tiltstream's allow-list; nothing was sent")
            return method(pos, **kwargs)

        return set_stage_position


class BridgeError(MicroscopeFault):
    """The bridge could not do what was asked (unreachable, refused, or kept failing); one line."""


class NotOffered(BridgeError):
    """The server answered 404: it does not know this endpoint or this name."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing bridge call is retried.

    Attributes
    ----------
    attempts
        Total tries per call (1 = no retry).
    backoff_s
        Wait before the second try, seconds; doubles after each failure.
    max_backoff_s
        Upper bound of one wait, seconds.
    """

    attempts: int = 4
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0


def parse_bridge_url(url: str) -> tuple[str, int]:
    """``http://HOST:PORT`` -> ``(host, port)``; anything else is a :class:`UserError`."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise UserError(f"bridge URL {url!r} is not of the form http://HOST:PORT "
                        "(for example http://127.0.0.1:8080)")
    return parts.hostname, port


class BridgeMicroscope:
    """A microscope reached through ``temscript-server`` (or any server of the temscript v1 API).

    Parameters
    ----------
    url
        ``http://HOST:PORT`` of the bridge.
    timeout_s
        Socket timeout of every call, seconds; acquisitions get this plus twice the frame time.
    retry
        Retry policy for transient failures.
    speed
        Stage speed factor sent with each move (1.0 = the microscope's default; None = not sent).
    sleep
        The waiting function (``time.sleep``); injectable so fault tests run fast.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, retry: RetryPolicy = RetryPolicy(),
                 speed: float | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.address = parse_bridge_url(url)
        self.timeout_s = float(timeout_s)
        self.retry = retry
        self.speed = speed
        self._sleep = sleep
        self._control: Any = None
        self._acquirer: Any = None
        self._frame_time_s = 0.0
        self._kinds: dict[str, str] = {}
        self._params: dict[str, AcquisitionParams] = {}
        self._call("connect", lambda remote: remote.get_version())

    # -- transport -----------------------------------------------------------------------------
    def _client(self, for_acquisition: bool) -> Any:
        from temscript import RemoteMicroscope

        if for_acquisition:
            if self._acquirer is None:
                self._acquirer = AllowListedRemote(RemoteMicroscope(
                    self.address, timeout=self.timeout_s + 2.0 * self._frame_time_s))
            return self._acquirer
        if self._control is None:
            self._control = AllowListedRemote(RemoteMicroscope(self.address, timeout=self.timeout_s))
        return self._control

    def _call(self, what: str, fn: Callable[[Any], T], *, for_acquisition: bool = False) -> T:
        """Run ``fn(remote)`` with retries; unrecoverable failures become one :class:`BridgeError`."""
        delay_s = self.retry.backoff_s
        last: BaseException | None = None
        for attempt in range(1, max(1, self.retry.attempts) + 1):
            try:
                return fn(self._client(for_acquisition))
            except KeyError as exc:  # HTTP 404: the server does not know the endpoint or the name
                raise NotOffered(f"bridge {self.url}: {what} refused: {exc.args[0] if exc.args else exc}") from None
            except TRANSIENT as exc:
                last = exc
                self._control = None
                self._acquirer = None
                if attempt < self.retry.attempts:
                    log.warning("bridge %s: %s failed (%s: %s); retry %d of %d in %.2f s", self.url, what,
                                type(exc).__name__, exc, attempt, self.retry.attempts - 1, delay_s)
                    self._sleep(delay_s)
                    delay_s = min(2.0 * delay_s, self.retry.max_backoff_s)
        reason = f"{type(last).__name__}: {last}" if last is not None else "no attempt"
        if isinstance(last, ConnectionRefusedError) or (what == "connect" and isinstance(last, OSError)):
            raise BridgeError(f"cannot reach the microscope bridge at {self.url} ({reason}) after "
                              f"{self.retry.attempts} attempts; is temscript-server running there?") from None
        raise BridgeError(f"bridge {self.url}: {what} failed {self.retry.attempts} times; last: {reason}") from None

    # -- stage ---------------------------------------------------------------------------------
    def alpha_deg(self) -> float:
        """Stage alpha, degrees (the bridge reports radians)."""
        position = self._call("read stage position", lambda r: r.get_stage_position())
        return math.degrees(float(position["a"]))

    def move_alpha_deg(self, alpha_deg: float, speed: float | None = None) -> None:
        """Command alpha only (``PUT stage_position`` with ``method=GO``), radians on the wire."""
        speed = self.speed if speed is None else speed
        alpha_rad = math.radians(alpha_deg)
        self._call(f"move alpha to {alpha_deg:.3f} deg",
                   lambda r: r.set_stage_position({"a": alpha_rad}, method="GO", speed=speed))

    def stage_status(self) -> str:
        """Stage status name, e.g. ``READY`` or ``MOVING``."""
        return str(self._call("read stage status", lambda r: r.get_stage_status()))

    def alpha_limits_deg(self) -> tuple[float, float]:
        """Holder alpha range, degrees."""
        limits = self._call("read stage limits", lambda r: r.get_stage_limits())
        low_rad, high_rad = limits["a"]
        return math.degrees(float(low_rad)), math.degrees(float(high_rad))

    def stage_position(self) -> StagePosition:
        """Stage x, y, z in metres."""
        position = self._call("read stage position", lambda r: r.get_stage_position())
        return StagePosition(x=float(position.get("x", 0.0)), y=float(position.get("y", 0.0)),
                             z=float(position.get("z", 0.0)))

    def move_stage_xy_m(self, x_m: float, y_m: float) -> None:
        """Command stage x and y only (``PUT stage_position`` with ``method=GO``), metres."""
        self._call(f"move stage x/y to ({x_m * 1e9:.1f}, {y_m * 1e9:.1f}) nm",
                   lambda r: r.set_stage_position({"x": float(x_m), "y": float(y_m)}, method="GO"))

    # -- optics for tracking and focus ---------------------------------------------------------
    def image_shift_m(self) -> tuple[float, float]:
        """Image shift (x, y), metres."""
        shift = self._call("read image shift", lambda r: r.get_image_shift())
        return float(shift[0]), float(shift[1])

    def set_image_shift_m(self, shift_m: tuple[float, float]) -> None:
        """Set the image shift (x, y), metres."""
        value = [float(shift_m[0]), float(shift_m[1])]
        self._call(f"set image shift to ({value[0] * 1e9:.1f}, {value[1] * 1e9:.1f}) nm",
                   lambda r: r.set_image_shift(value))

    def probe_defocus_m(self) -> float:
        """Probe defocus, metres."""
        return float(self._call("read probe defocus", lambda r: r.get_probe_defocus()))

    def set_probe_defocus_m(self, defocus_m: float) -> None:
        """Set the probe defocus, metres."""
        self._call(f"set probe defocus to {defocus_m * 1e9:.1f} nm", lambda r: r.set_probe_defocus(float(defocus_m)))

    # -- beam ----------------------------------------------------------------------------------
    def beam_blanked(self) -> bool:
        """Whether the beam is blanked."""
        return bool(self._call("read beam blank", lambda r: r.get_beam_blanked()))

    def set_beam_blanked(self, blanked: bool) -> None:
        """Blank or unblank the beam."""
        self._call("blank beam" if blanked else "unblank beam", lambda r: r.set_beam_blanked(bool(blanked)))

    # -- detectors -----------------------------------------------------------------------------
    def detectors(self) -> dict[str, DetectorInfo]:
        """STEM detectors and cameras by name (a server without one of the calls offers none of that kind)."""
        found: dict[str, DetectorInfo] = {}
        for kind, getter in (("camera", "get_cameras"), ("stem", "get_stem_detectors")):
            try:
                names = self._call(f"list {kind} detectors", lambda r, g=getter: getattr(r, g)())
            except NotOffered:
                continue
            for name, info in (names or {}).items():
                fraction = info.get("detected_fraction_per_unit") if isinstance(info, dict) else None
                found[str(name)] = DetectorInfo(name=str(name), kind=kind,  # type: ignore[arg-type]
                                                detected_fraction_per_unit=_positive(fraction))
        self._kinds = {name: info.kind for name, info in found.items()}
        return found

    def _kind(self, detector: str) -> str:
        if detector not in self._kinds:
            self.detectors()
        if detector not in self._kinds:
            raise UserError(f"detector {detector!r} is not offered by the microscope at {self.url}; "
                            f"available: {', '.join(sorted(self._kinds)) or 'none'}")
        return self._kinds[detector]

    def acquisition_params(self, detector: str) -> AcquisitionParams:
        """Current parameters of ``detector`` (``stem_acquisition_param`` or ``camera_param/NAME``)."""
        if self._kind(detector) == "stem":
            raw = self._call("read STEM acquisition parameters", lambda r: r.get_stem_acquisition_param())
            return AcquisitionParams(image_size=str(raw.get("image_size", "FULL")),  # type: ignore[arg-type]
                                     binning=int(raw.get("binning", 1)),
                                     dwell_time_s=float(raw["dwell_time(s)"]))
        raw = self._call(f"read {detector} parameters", lambda r: r.get_camera_param(detector))
        return AcquisitionParams(image_size=str(raw.get("image_size", "FULL")),  # type: ignore[arg-type]
                                 binning=int(raw.get("binning", 1)), exposure_s=float(raw["exposure(s)"]))

    def set_acquisition_params(self, detector: str, params: AcquisitionParams) -> AcquisitionParams:
        """Send the parameters that differ from the current ones; returns what the microscope then reports."""
        current = self.acquisition_params(detector)
        stem = self._kind(detector) == "stem"
        time_key, time_value, time_now = (("dwell_time(s)", params.dwell_time_s, current.dwell_time_s) if stem
                                          else ("exposure(s)", params.exposure_s, current.exposure_s))
        changes: dict[str, Any] = {}
        if params.image_size != current.image_size:
            changes["image_size"] = params.image_size
        if params.binning != current.binning:
            changes["binning"] = params.binning
        if time_value is not None and time_value != time_now:
            changes[time_key] = time_value
        if changes:
            if stem:
                self._call("set STEM acquisition parameters", lambda r: r.set_stem_acquisition_param(changes))
            else:
                self._call(f"set {detector} parameters", lambda r: r.set_camera_param(detector, changes))
        actual = self.acquisition_params(detector)
        self._params[detector] = actual
        self._frame_time_s = frame_time_s(actual, None)
        self._acquirer = None
        return actual

    def pixel_size_nm(self, detector: str) -> float | None:
        """Pixel size at the specimen as the microscope reports it, nm (None: not reported).

        Camera: ``pixel_size(um)`` x binning / indicated magnification. STEM: the ``pixel_size(m)`` key of
        the STEM acquisition parameters, when the server adds one (temscript itself reports no STEM field).
        """
        if self._kind(detector) == "stem":
            raw = self._call("read STEM acquisition parameters", lambda r: r.get_stem_acquisition_param())
            size_m = _positive(raw.get("pixel_size(m)"))
            return None if size_m is None else size_m * 1e9
        camera = self._call("list camera detectors", lambda r: r.get_cameras()).get(detector, {})
        size_um = _positive(camera.get("pixel_size(um)"))
        try:
            magnification = _positive(self._call("read indicated magnification",
                                                 lambda r: r.get_indicated_magnification()))
        except NotOffered:
            magnification = None
        if size_um is None or magnification is None:
            return None
        return size_um * 1e3 * self.acquisition_params(detector).binning / magnification

    def beam_current_pA(self) -> float | None:
        """The beam current the microscope measures (its ``screen_current``), pA; None when not positive."""
        try:
            current_A = _positive(self._call("read screen current", lambda r: r.get_screen_current()))
        except NotOffered:
            return None
        return None if current_A is None else current_A * 1e12

    def acquire(self, detector: str) -> np.ndarray:
        """One image on ``detector``, in the dtype the bridge's packed ``type`` names, shape (ny, nx)."""
        self._kind(detector)
        images = self._call(f"acquire on {detector}", lambda r: r.acquire(detector), for_acquisition=True)
        if detector not in images:
            raise BridgeError(f"bridge {self.url}: acquisition on {detector!r} returned no image "
                              f"(got {', '.join(images) or 'nothing'})")
        image = np.asarray(images[detector])
        if image.ndim != 2:
            raise BridgeError(f"bridge {self.url}: {detector!r} returned an array of shape {image.shape}, not 2-D")
        if detector in self._params:  # STEM frame time is known once the frame shape is
            frame_s = frame_time_s(self._params[detector], image.shape)
            if frame_s > self._frame_time_s:
                self._frame_time_s = frame_s
                self._acquirer = None
        return image


def _positive(value: Any) -> float | None:
    """``value`` as a float when it is a finite positive number, else None (not reported)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def frame_time_s(params: AcquisitionParams, shape: tuple[int, int] | None) -> float:
    """Time one frame takes, seconds: the exposure (camera) or dwell time x pixels (STEM, needs ``shape``)."""
    if params.exposure_s is not None:
        return float(params.exposure_s)
    if params.dwell_time_s is not None and shape is not None:
        return float(params.dwell_time_s) * shape[0] * shape[1]
    return 0.0
