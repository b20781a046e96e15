"""Work-dir ownership: the lock, fresh runs in a used directory, latest.pth and pruning, resume
past a damaged newest checkpoint, leftovers of killed writes, the log across a kill, file modes
and a full disk."""
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from _engine_fakes import FakeSegDataset, read_jsonl, toy_config
from ssaseg.fileio import atomic_write
from ssaseg.engine import train
from ssaseg.engine.state import atomic_torch_save
from ssaseg.engine.workdir import WorkDir, WorkDirError


pytestmark = pytest.mark.usefixtures("single_thread")


def _run(cfg, resume=None, **kw):
    return train(cfg, resume=resume, train_dataset=FakeSegDataset(6), val_dataset=FakeSegDataset(2, train=False),
                 progress=False, tensorboard=False, **kw)


def test_second_run_on_a_locked_dir_fails_at_once(tmp_path):
    cfg = toy_config(str(tmp_path))
    with WorkDir(tmp_path).locked():
        with pytest.raises(WorkDirError, match=f"work dir {tmp_path} is in use by another training run .*{os.getpid()}"):
            _run(cfg)
    assert not list(tmp_path.glob("iter_*.pth")) and not (tmp_path / "log.jsonl").exists()


def test_lock_held_by_another_process_and_released_by_kill_9(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from ssaseg.engine.workdir import WorkDir\n"
            "with WorkDir(sys.argv[1]).locked():\n    print('locked', flush=True); time.sleep(600)\n")
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), src], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(WorkDirError, match=f"process {proc.pid}"):
            with WorkDir(tmp_path).locked():
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with WorkDir(tmp_path).locked():  # the OS released it with the process
        pass


def test_fresh_run_refuses_a_dir_with_another_runs_checkpoints(tmp_path):
    cfg = toy_config(str(tmp_path), schedule={"max_iters": 2}, train={"checkpoint_interval": 0})
    _run(cfg)
    log_before = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(WorkDirError, match=r"already holds checkpoints of a run \(iter_2.pth\); continue that run "
                                           r"with --resume auto, or start a new one in a different --work-dir"):
        _run(cfg)
    assert (tmp_path / "log.jsonl").read_text() == log_before  # nothing appended
    res = _run(cfg, fresh_start=True)  # the demo's explicit restart
    assert res.iterations == 2 and [r["iter"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2]


def test_latest_points_to_newest_and_pruning_keeps_it(tmp_path):
    cfg = toy_config(str(tmp_path), train={"checkpoint_interval": 2, "max_keep_checkpoints": 2})
    res = _run(cfg)
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_6.pth", "iter_8.pth"]
    assert os.readlink(tmp_path / "latest.pth") == "iter_8.pth" == res.checkpoint.name
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["iteration"] == 8


def test_resume_auto_falls_back_past_a_truncated_newest_checkpoint(tmp_path, capsys):
    """Straight 8 iterations == 6 + (iter_6 truncated) resume from iter_4: same losses, a warning
    naming iter_6.pth, no duplicated log records."""
    straight = _run(toy_config(str(tmp_path / "a"), train={"checkpoint_interval": 0}))
    cfg = toy_config(str(tmp_path / "b"), train={"checkpoint_interval": 2})
    _run(cfg, stop_after=6)
    newest = tmp_path / "b" / "iter_6.pth"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    res = _run(cfg, resume="auto")
    assert res.iterations == 4
    assert f"--resume auto skips {newest}" in capsys.readouterr().err
    records = [r for r in read_jsonl(tmp_path / "b" / "log.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in records] == list(range(1, 9))
    assert [r["loss"] for r in records] == [r["loss"] for r in straight.history]
    assert torch.load(newest, weights_only=True)["iteration"] == 6  # rewritten whole


def test_resume_auto_with_only_damaged_checkpoints_is_an_error(tmp_path):
    cfg = toy_config(str(tmp_path), schedule={"max_iters": 2}, train={"checkpoint_interval": 0})
    _run(cfg)
    (tmp_path / "iter_2.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"none of the checkpoints in .* can be resumed \(iter_2.pth\)"):
        _run(cfg, resume="auto")


def test_leftover_temp_files_are_removed(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    leftover = tmp_path / ".iter_4.pth.k2j3.tmp"
    leftover.write_bytes(b"half a checkpoint")
    _run(toy_config(str(tmp_path), schedule={"max_iters": 2}, train={"checkpoint_interval": 0}))
    assert not leftover.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        _run(toy_config(str(tmp_path), schedule={"max_iters": 1}, train={"checkpoint_interval": 0}))
        atomic_write(tmp_path / "x.bin", lambda fh: fh.write(b"x"))
    finally:
        os.umask(old)
    for name in ("iter_1.pth", "config.yaml", "log.jsonl", "x.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_disk_full_while_saving_names_the_file_and_keeps_the_old_one(tmp_path):
    """RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails them."""
    path = tmp_path / "iter_1.pth"
    atomic_torch_save({"w": torch.zeros(4)}, path)
    before = path.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(OSError, match=f"cannot write {path}"):
            atomic_torch_save({"w": torch.zeros(100_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_log_write_names_the_file(tmp_path):
    from ssaseg.engine.logger import RunLogger

    (tmp_path / "log.jsonl").mkdir()  # any write failure (full disk, ...) surfaces like this one
    with pytest.raises(OSError, match=f"cannot append to {tmp_path / 'log.jsonl'}"):
        RunLogger(tmp_path, tensorboard=False).log({"iter": 1})
