"""Benchmark: how far the specimen wanders over a GRS series with tracking off, previous and model.

The simulated microscope (nanorod, ``--size`` voxels of ``--pixel-nm``) sits ``--offset-nm`` above the
tilt axis with a random drift of ``--drift-px`` per frame; the operator centres it at the first angle
(-70 deg), as for any series. ``tiltstream``'s executor drives it through the real temscript client and
server on loopback. The error of frame i is the true image position of the specimen (the simulator's
displacement plus its drift) relative to frame 0, pixels.

``ideal`` is the reference without the problem: no eucentric offset, no drift, tracking off.
``model`` is measured against a real live reconstruction: a ``tiltstream live`` process (DIP-STER, its
default settings, CPU, ``--live-threads``) takes the frames the executor publishes and answers the
tracker's reprojection requests; the series is paced at ``--seconds-per-frame`` of wall time per frame so
the live process trains between frames as it would at the microscope. The fraction of frames measured
against the model (tracking mode ``model``; the rest fell back to ``previous``) is reported.
``oracle`` is the upper bound: a ROUTER on loopback answers each reprojection request with the
ground-truth specimen projected at the requested angle, centred.

The table gives the max and the median error from frame 5 on (after the warm-up), the acceptance figures
of ``--track model`` (docs/benchmarks/tracking.md): it should engage on most frames after its warm-up and
be no worse than ``previous`` anywhere.

With ``--ssim`` each series is also reconstructed with one SIRT over all its frames (30 iterations) and
compared with the time-averaged ground truth (SSIM and RMSE inside the Otsu mask, tiltstream.recon.metrics): what the
wandering costs a reconstruction that does not re-align.

The per-frame overhead (bridge calls for the correction, the measurement, the fit: the extra wall time per
frame over ``off``) is printed; ``tiltstream.acquire.plan_summary.AUTO_TRACKING_S`` (``tiltstream scheme --tracking
auto``) holds the measured value.

    OMP_NUM_THREADS=1 python bench/tracking.py --frames 100
    python bench/tracking.py --frames 40 --size 32 --offset-nm 200 --modes off previous model
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import zmq

from tiltstream.acquire.bridge import BridgeMicroscope, RetryPolicy
from tiltstream.acquire.corrections import TrackingLoop
from tiltstream.acquire.executor import Executor, ExecutorConfig
from tiltstream.acquire.microscope import AcquisitionParams
from tiltstream.acquire.model_link import ModelLink, decode_request, encode_reply
from tiltstream.acquire.publisher import FramePublisher
from tiltstream.acquire.scheme import TiltScheme
from tiltstream.acquire.session import SessionSettings, SessionWriter, read_session
from tiltstream.simulator.bridge_server import running_server
from tiltstream.simulator.clock import ManualClock
from tiltstream.simulator.microscope import SimulatedMicroscope
from tiltstream.simulator.settings import SimSettings


def free_endpoint() -> str:
    """A loopback TCP endpoint nothing listens on now."""
    socket = zmq.Context.instance().socket(zmq.REP)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    socket.close(linger=0)
    return f"tcp://127.0.0.1:{port}"


class LiveModel:
    """A real ``tiltstream live`` process (DIP-STER, default settings, CPU) on the session the run writes."""

    def __init__(self, session: Path, run: Path, threads: int, frames: int) -> None:
        self.publish, self.endpoint = free_endpoint(), free_endpoint()
        self.log = open(run.parent / "live.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tiltstream", "live", "--connect", self.publish, "--session", str(session),
             "--out", str(run), "--status", "tcp://127.0.0.1:*", "--volume-endpoint", self.endpoint,
             "--headless", "--device", "cpu", "--threads", str(threads), "--expected-frames", str(frames)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while not (run / "endpoints.json").is_file():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the live process did not start: {(run.parent / 'live.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        """Wait for the live process to finish the run (the publisher ended it), else stop it."""
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(30)
        self.log.close()


class OracleModel:
    """A ROUTER on loopback answering ``reproject?`` with the ground truth projected at the asked angle."""

    def __init__(self, sim: SimulatedMicroscope) -> None:
        self.sim = sim
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(20):
                continue
            identity, *parts = self._socket.recv_multipart()
            request = decode_request(parts)
            image = self.sim.specimen.frame(request.angle_deg, self.sim.clock.now_s())
            self._socket.send_multipart([identity, *encode_reply(request, "oracle", image, step=0, error_percent=0.0)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close(linger=0)


class TimedLoop(TrackingLoop):
    """A tracking loop that adds up the wall time of its own work (bridge reads/writes are timed by the run)."""

    compute_s = 0.0

    def measure(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return super().measure(*args, **kwargs)
        finally:
            self.compute_s += time.perf_counter() - start


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """One series with tracking ``mode``; returns per-frame errors (px) and timings."""
    ideal = mode == "ideal"
    settings = SimSettings(phantom="nanorod", size=args.size, steps=args.frames, seconds_per_step=1.0,
                           mode="instant", device="cpu", pixel_size_nm=args.pixel_nm,
                           eucentric_offset_nm=0.0 if ideal else args.offset_nm,
                           drift_px_per_frame=0.0 if ideal else args.drift_px, seed=args.seed,
                           dwell_time_s=args.dwell_s)
    clock = ManualClock()
    sim = SimulatedMicroscope(settings, clock=clock)
    sim.set_image_shift([-settings.eucentric_offset_nm * 1e-9 * math.sin(math.radians(-70.0)), 0.0])  # centred
    config = ExecutorConfig(detector="HAADF", params=AcquisitionParams(dwell_time_s=args.dwell_s),
                            beam_current_pA=60.0, pixel_size_nm=args.pixel_nm, stage_timeout_s=5.0, poll_s=0.001)
    pace_s = args.seconds_per_frame if mode == "model" else 0.0

    def between(_: object) -> None:
        clock.advance(1.0)
        time.sleep(pace_s)

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        writer = SessionWriter.create(Path(tmp) / "s", SessionSettings(pixel_size_nm=args.pixel_nm))
        publisher, endpoint = None, None
        if mode == "model":
            live = LiveModel(writer.path, Path(tmp) / "run", args.live_threads, args.frames)
            stack.callback(live.close)
            publisher = FramePublisher(live.publish, writer.path)
            stack.callback(publisher.close)
            endpoint = live.endpoint
        elif mode == "oracle":
            oracle = OracleModel(sim)
            stack.callback(oracle.close)
            endpoint = oracle.endpoint
        link = ModelLink(endpoint, timeout_s=args.model_timeout_s) if endpoint is not None else None
        if link is not None:
            stack.callback(link.close)
        track = "model" if mode == "oracle" else mode
        loop = None if mode in ("off", "ideal") else TimedLoop(track, "tilt-model", args.pixel_nm, model=link)  # type: ignore[arg-type]
        with running_server(sim) as url:
            scope = BridgeMicroscope(url, retry=RetryPolicy(attempts=1))
            executor = Executor(scope, TiltScheme(kind="grs", count=args.frames), writer, config, tracking=loop,
                                publisher=publisher, between_frames=between)
            started = time.perf_counter()
            executor.run()
            wall_s = time.perf_counter() - started
        modes = [r.tracking.mode for r in writer.records if r.tracking is not None]
        session = read_session(writer.path)
        frames, angles_deg = session.load_frames(), session.angles_deg
    positions = np.array([[f.displacement_m[0] * 1e9 / args.pixel_nm + f.drift_px[0],
                           f.displacement_m[1] * 1e9 / args.pixel_nm + f.drift_px[1]] for f in sim.frames])
    errors = np.hypot(*(positions - positions[0]).T)
    quality = reconstruction_quality(frames, angles_deg, sim.specimen.volumes) if args.ssim else {}
    return quality | {"mode": mode, "errors_px": errors.round(3).tolist(), "wall_s": wall_s,
                      "compute_s_per_frame": (loop.compute_s / args.frames) if loop is not None else 0.0,
                      "blur_px": [round(f.blur_px, 3) for f in sim.frames], "tracking_modes": modes,
                      "model_summary": loop.model.summary() if loop is not None and loop.model is not None else None}


def reconstruction_quality(frames: np.ndarray, angles_deg: np.ndarray, volumes: np.ndarray) -> dict:
    """SSIM and RMSE (%) of one SIRT over all frames against the time-averaged ground truth (Otsu mask)."""
    from tiltstream.recon.metrics import rmse_percent, ssim
    from tiltstream.recon.sirt import sirt

    truth = volumes.mean(axis=0)
    volume = sirt(frames, angles_deg, truth.shape, iterations=30)
    return {"ssim": ssim(volume, truth), "rmse_percent": rmse_percent(volume, truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="phantom and frame edge, voxels/pixels")
    parser.add_argument("--pixel-nm", type=float, default=8.0, help="pixel size, nm (binned frames)")
    parser.add_argument("--offset-nm", type=float, default=200.0, help="eucentric offset, nm")
    parser.add_argument("--drift-px", type=float, default=0.3, help="drift random-walk step, px per frame")
    parser.add_argument("--dwell-s", type=float, default=2e-5, help="dwell time, s per pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["ideal", "off", "previous", "model", "oracle"],
                        help="ideal, off, previous, model (a live DIP-STER process), oracle (the ground truth)")
    parser.add_argument("--seconds-per-frame", type=float, default=5.0,
                        help="model: wall time between frames, s (the live process trains meanwhile)")
    parser.add_argument("--live-threads", type=int, default=2, help="model: the live process's torch threads")
    parser.add_argument("--model-timeout-s", type=float, default=0.5, help="model: acquire's --model-timeout-s")
    parser.add_argument("--out", type=Path, default=None, help="write the per-frame errors as JSON here")
    parser.add_argument("--ssim", action="store_true", help="also reconstruct each series (SIRT) and score it")
    args = parser.parse_args()
    results = []
    print(f"nanorod {args.size}^3, {args.pixel_nm} nm/px, eucentric offset {args.offset_nm} nm, drift "
          f"{args.drift_px} px/frame, {args.frames} GRS frames -70..70 deg")
    print("| tracking | max error (px) | median error from frame 5 (px) | max error from frame 5 (px) | "
          "frames > 2 px | model engaged (from frame 5) | tracking compute per frame (ms) | run wall time (s) | "
          "SIRT SSIM | SIRT RMSE (%) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes:
        result = run_mode(mode, args)
        results.append(result)
        errors = np.array(result["errors_px"])
        tracked = result["tracking_modes"][5:]
        engaged = f"{tracked.count('model') / len(tracked):.0%}" if mode in ("model", "oracle") and tracked else "-"
        print(f"| {mode} | {errors.max():.2f} | {np.median(errors[5:]):.2f} | {errors[5:].max():.2f} | "
              f"{int((errors > 2).sum())} | {engaged} | {1000 * result['compute_s_per_frame']:.1f} | "
              f"{result['wall_s']:.1f} | {result.get('ssim', float('nan')):.3f} | "
              f"{result.get('rmse_percent', float('nan')):.1f} |", flush=True)
        if result["model_summary"]:
            print(f"  {mode}: {result['model_summary']}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    by_mode = {r["mode"]: r for r in results}
    if "off" in by_mode and len(by_mode) > 1:  # the extra wall time per frame: bridge calls and compute
        overhead_s = max((r["wall_s"] - by_mode["off"]["wall_s"]) / args.frames for r in results
                         if r["mode"] in ("previous", "oracle"))
        print(f"tracking overhead per frame (extra wall time over off, loopback bridge): {1000 * overhead_s:.1f} ms")


if __name__ == "__main__":
    main()
