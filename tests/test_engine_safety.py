"""Trainer safety: non-finite losses and weights, verified checkpoints, the resume contract.

Each test replays a failure of issue 10 on the tiny ``engine_toy`` model and would fail if it came
back: a diverging run must not replace good checkpoints, a resume must be the same run.
"""
import os

import pytest
import torch

from _engine_fakes import FakeSegDataset, read_jsonl, toy_config
from ssaseg.engine import test as run_test
from ssaseg.engine import train
from ssaseg.engine.nonfinite import NonFiniteError
from ssaseg.engine.resume import RESUME_SAFE_KEYS, ResumeError, config_differences
from ssaseg.engine.state import load_training_checkpoint, nonfinite_tensors


pytestmark = pytest.mark.usefixtures("single_thread")


def _run(cfg, resume=None, **kw):
    return train(cfg, resume=resume, train_dataset=FakeSegDataset(6), val_dataset=FakeSegDataset(2, train=False),
                 progress=False, tensorboard=False, **kw)


def _all_finite(path):
    ckpt = load_training_checkpoint(path)
    return not nonfinite_tensors({"model": ckpt["model"], "optimizer": ckpt["optimizer"]["state"]})


def test_nan_loss_stops_at_that_iteration_and_keeps_good_checkpoints(tmp_path):
    """The issue's run: log every 4, checkpoint every iteration, keep 2. The loss turns NaN at
    iteration 3; the error names iteration 3, its loss terms and lr; iter_1 and iter_2 stay,
    latest.pth points at iter_2, nothing non-finite is on disk, no log record after 2."""
    cfg = toy_config(str(tmp_path), model={"name": "engine_toy_diverging", "kwargs": {"nan_at": 3}},
                     train={"log_interval": 4, "checkpoint_interval": 1, "max_keep_checkpoints": 2})
    with pytest.raises(NonFiniteError, match=r"iteration 3 .*loss=nan, ce=nan\) at lr [0-9.e+-]+;") as info:
        _run(cfg)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    names = sorted(p.name for p in tmp_path.glob("iter_*.pth"))
    assert names == ["iter_1.pth", "iter_2.pth"]
    assert all(_all_finite(tmp_path / n) for n in names)
    assert os.readlink(tmp_path / "latest.pth") == "iter_2.pth"
    assert not (tmp_path / "log.jsonl").exists() or all(r["iter"] <= 2 for r in read_jsonl(tmp_path / "log.jsonl"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_nan_detected_at_the_log_step_names_the_first_bad_iteration(tmp_path):
    """No checkpoint in between: the device-side record carries iteration 2 to the log sync at 4."""
    cfg = toy_config(str(tmp_path), model={"name": "engine_toy_diverging", "kwargs": {"nan_at": 2}},
                     train={"log_interval": 4, "checkpoint_interval": 0})
    with pytest.raises(NonFiniteError, match="iteration 2 "):
        _run(cfg)
    assert not list(tmp_path.glob("iter_*.pth"))


def test_nonfinite_weights_with_finite_loss_are_not_saved(tmp_path):
    """Iteration 2's loss is finite but its gradient is not: the update makes weights NaN."""
    cfg = toy_config(str(tmp_path), model={"name": "engine_toy_diverging", "kwargs": {"nan_at": 2, "mode": "grad"}},
                     train={"log_interval": 1, "checkpoint_interval": 1})
    with pytest.raises(NonFiniteError, match=r"iteration 2 .*tensors are not \(model.probe.*iter_2.pth was not written"):
        _run(cfg)
    assert [p.name for p in tmp_path.glob("iter_*.pth")] == ["iter_1.pth"]
    assert _all_finite(tmp_path / "iter_1.pth")


def test_nonfinite_skip_mode_skips_the_bad_steps(tmp_path, capsys):
    cfg = toy_config(str(tmp_path), model={"name": "engine_toy_diverging", "kwargs": {"nan_at": 7}},
                     train={"nonfinite": "skip", "log_interval": 4, "checkpoint_interval": 0})
    res = _run(cfg)
    assert "iteration 7: non-finite loss" in capsys.readouterr().err
    assert res.history[-1]["iter"] == 8 and res.history[-1]["skipped_steps"] == 2
    assert _all_finite(res.checkpoint)


def test_test_and_predict_refuse_nonfinite_weights(tmp_path):
    cfg = toy_config(str(tmp_path / "run"), schedule={"max_iters": 1}, train={"checkpoint_interval": 0})
    res = _run(cfg)
    ckpt = load_training_checkpoint(res.checkpoint)
    ckpt["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    bad = tmp_path / "nan.pth"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match=r"nan.pth holds non-finite \(NaN/inf\) weights"):
        run_test(cfg, str(bad), dataset=FakeSegDataset(2, train=False), progress=False)
    from ssaseg.engine.predict import load_model_for_inference

    with pytest.raises(ValueError, match="non-finite"):
        load_model_for_inference(bad)


@pytest.mark.parametrize(
    "change, listed",
    [
        ({"data": {"batch_size": 4}}, "data.batch_size: 2 -> 4"),
        ({"data": {"train_split": "validation"}}, "data.train_split: 'training' -> 'validation'"),
        ({"optimizer": {"lr": 1.0}}, "optimizer.lr: 0.001 -> 1.0"),
        ({"model": {"classifier": "ssa"}}, "model.classifier: 'linear' -> 'ssa'"),
        ({"schedule": {"max_iters": 16}}, "schedule.max_iters: 8 -> 16"),
    ],
)
def test_resume_refuses_run_defining_changes(tmp_path, change, listed):
    cfg = toy_config(str(tmp_path), train={"checkpoint_interval": 0})
    _run(cfg, stop_after=2)
    before = (tmp_path / "config.yaml").read_text()
    changed = toy_config(str(tmp_path), train={"checkpoint_interval": 0}, **change)
    with pytest.raises(ResumeError, match=f"iter_2.pth: .*{listed}".replace("(", r"\(").replace(")", r"\)")):
        _run(changed, resume="auto")
    assert (tmp_path / "config.yaml").read_text() == before  # still says what the run uses


def test_resume_accepts_safe_keys_and_records_them(tmp_path):
    cfg = toy_config(str(tmp_path), train={"checkpoint_interval": 0})
    _run(cfg, stop_after=2)
    later = toy_config(str(tmp_path), train={"checkpoint_interval": 0, "log_interval": 2, "eval_interval": 4},
                       data={"num_workers": 1}, evaluation={"flip": True})
    res = _run(later, resume="auto")
    assert res.iterations == 6 and res.metrics is not None
    assert "log_interval: 2" in (tmp_path / "config.yaml").read_text()
    assert load_training_checkpoint(res.checkpoint)["config"] == later


def test_resume_refuses_another_world_size_and_names_the_file(tmp_path):
    cfg = toy_config(str(tmp_path), train={"checkpoint_interval": 0})
    res = _run(cfg, stop_after=2)
    ckpt = load_training_checkpoint(res.checkpoint)
    ckpt["world_size"] = 4
    torch.save(ckpt, res.checkpoint)
    with pytest.raises(ResumeError, match=r"iter_2.pth: .*number of processes: 4 -> 1"):
        _run(cfg, resume="auto")


def test_config_differences_ignore_only_the_safe_keys():
    base = toy_config("a")
    other = toy_config("b", train={"log_interval": 9}, evaluation={"mode": "slide"}, model={"sync_bn": True})
    assert config_differences(base, other) == ["model.sync_bn: False -> True"]
    older = {**base, "schedule": {k: v for k, v in base["schedule"].items() if k != "min_lr"}}
    assert config_differences(older, base) == []  # a key the old run did not know: its default
    assert "train.seed" not in RESUME_SAFE_KEYS and "train.log_interval" in RESUME_SAFE_KEYS


def test_resume_model_mismatch_names_the_checkpoint_file(tmp_path):
    cfg = toy_config(str(tmp_path), train={"checkpoint_interval": 0})
    res = _run(cfg, stop_after=2)
    ckpt = load_training_checkpoint(res.checkpoint)
    ckpt["model"].pop(next(iter(ckpt["model"])))
    torch.save(ckpt, res.checkpoint)
    with pytest.raises(ValueError, match=r"iter_2\.pth does not fit"):
        _run(cfg, resume=str(res.checkpoint))


def _ddp_diverging_worker(rank, world, port, work_dir, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    # only rank 1's loss turns NaN (at iteration 3); rank 0 sees it through the gradient all-reduce
    cfg = toy_config(work_dir, model={"name": "engine_toy_diverging", "kwargs": {"nan_at": 3 if rank else 100}},
                     data={"batch_size": 1}, train={"log_interval": 4, "checkpoint_interval": 2})
    try:
        train(cfg, train_dataset=FakeSegDataset(8), val_dataset=FakeSegDataset(2, train=False), progress=False,
              tensorboard=False, device="cpu")
        outcome = "finished"
    except NonFiniteError as err:
        outcome = str(err)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as fh:
        fh.write(outcome)


@pytest.mark.timeout(300)
def test_ddp_ranks_stop_together_at_the_first_bad_iteration(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_diverging_worker, args=(2, port, str(tmp_path / "run"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    for rank in (0, 1):
        assert "training diverged at iteration 3 " in (tmp_path / f"rank{rank}.txt").read_text()
    assert sorted(p.name for p in (tmp_path / "run").glob("iter_*.pth")) == ["iter_2.pth"]
