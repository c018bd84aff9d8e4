"""A session streamed live (replay -> live process) and read from disk (catch-up) gives the same volumes."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tiltstream.live.run_state import VOLUMES_FILE
from tiltstream.recon.checkpoint import CHECKPOINT_FILE
from tiltstream.recon.run_dir import RUN_FILE
from tiltstream.recon.trainer import Trainer
from tiltstream.recon.volume_io import read_volumes
from tiltstream.simulator.replay_stream import replay_session
from tests.live.conftest import live_args


@pytest.mark.timeout(180)
def test_live_equals_offline(small_session, tmp_path, processes):
    """Replay at 20x into ``tiltstream live --steps-per-frame 4 --final-steps 6`` (a subprocess, every frame
    from the stream), and the same schedule in a second live process that reads the recorded session from
    disk (catch-up, nothing published, other chunks): the written volumes and the checkpoints' weights are
    equal (assert_allclose, 1e-6). Then the live run directory is read by ``recon volumes`` and resumed by
    ``recon train`` like an offline run."""
    run, disk_run = tmp_path / "run", tmp_path / "disk_run"
    disk = processes.start(*live_args(small_session, disk_run, "tcp://127.0.0.1:1", "--steps-per-frame", "4",
                                      "--final-steps", "6", "--chunk-steps", "7", "--threads", "1"),
                           log=tmp_path / "disk.log")
    endpoint = {}
    started = threading.Event()

    def on_start(pub, resend):
        endpoint["pub"], endpoint["resend"] = pub, resend
        started.set()

    # bind first (port 0), then start the live process against the bound port
    replay_thread = threading.Thread(target=lambda: replay_session(
        small_session, "tcp://127.0.0.1:*", resend="tcp://127.0.0.1:*", speed=20.0, wait=True, wait_timeout_s=90,
        on_start=on_start))
    replay_thread.start()
    try:
        assert started.wait(30)
        # no --session: every frame comes over the stream (or the publisher's resend endpoint), none from disk
        args = live_args(small_session, run, endpoint["pub"], "--steps-per-frame", "4", "--final-steps", "6",
                         "--chunk-steps", "3", "--threads", "1", "--resend", endpoint["resend"],
                         "--expected-frames", "10")
        args = args[:args.index("--session")] + args[args.index("--session") + 2:]
        proc = processes.start(*args, log=tmp_path / "live.log")
        assert proc.wait(100) == 0, (tmp_path / "live.log").read_text()
    finally:
        replay_thread.join(100)
    assert disk.wait(100) == 0, (tmp_path / "disk.log").read_text()
    live_volumes, times_s = read_volumes(run / VOLUMES_FILE)
    offline_volumes, offline_times_s = read_volumes(disk_run / VOLUMES_FILE)
    live = Trainer.load(run / CHECKPOINT_FILE)
    offline = Trainer.load(disk_run / CHECKPOINT_FILE)
    assert live.indices == offline.indices == list(range(10))
    assert live.steps_done == offline.steps_done == 10 * 4 + 6
    assert live.time_scale_s == offline.time_scale_s == 10 * 2.0
    np.testing.assert_allclose(offline_times_s, times_s)
    np.testing.assert_allclose(live_volumes, offline_volumes, rtol=1e-6, atol=1e-6)
    for name, value in offline.model.state_dict().items():
        np.testing.assert_allclose(live.model.state_dict()[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)

    # the live run directory is a run directory: recon volumes reads it (the same volumes) and recon train
    # resumes it (3 more steps, the frames' dose kept, no frame added twice)
    description = json.loads((run / RUN_FILE).read_text())
    assert description["method"] == "dipster" and description["time_scale_s"] == 20.0
    proc = processes.start("recon", "volumes", "--run", str(run), "--out", str(tmp_path / "again.tif"),
                           "--device", "cpu", log=tmp_path / "volumes.log")
    assert proc.wait(60) == 0, (tmp_path / "volumes.log").read_text()
    again, again_times = read_volumes(tmp_path / "again.tif")
    np.testing.assert_allclose(again_times, times_s)
    np.testing.assert_allclose(again, live_volumes, rtol=1e-6, atol=1e-6)
    proc = processes.start("recon", "train", "--session", str(small_session), "--out", str(run), "--steps", "3",
                           "--device", "cpu", "--threads", "1", log=tmp_path / "train.log")
    assert proc.wait(60) == 0, (tmp_path / "train.log").read_text()
    resumed = Trainer.load(run)
    assert resumed.steps_done == 10 * 4 + 6 + 3 and resumed.indices == list(range(10))
    assert resumed.frame_records[0]["dose_e_per_A2"] == live.frame_records[0]["dose_e_per_A2"] > 0
