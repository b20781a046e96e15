"""The CLI's error contract, enumerated: every user error of issue 10 exits 2 with one paragraph
naming the file, key or value, and no traceback; and nothing good on disk is lost on the way.
"""
import os
import resource
import shutil
import signal

import pytest
import torch
from PIL import Image

from _engine_fakes import TINY_CLI_CONFIG  # importing _engine_fakes registers engine_toy, engine_toy_diverging
from ssaseg.cli import run



pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A config on a built demo cache, and a finished 2-iteration run (its dir and checkpoint)."""
    from ssaseg.data.demo import ensure_demo_dataset

    root = tmp_path_factory.mktemp("contract")
    ensure_demo_dataset(root / "cache")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CLI_CONFIG.format(cache=root / "cache"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(["train", str(cfg), "--work-dir", str(root / "run"), "--no-progress", "--device", "cpu",
                    "--set", "schedule.max_iters=4", "--set", "train.checkpoint_interval=2"]) == 0
    finally:
        torch.set_num_threads(old)
    return {"root": root, "cfg": cfg, "run": root / "run", "ckpt": root / "run" / "iter_2.pth"}


def _fresh_copy(base, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base["run"], dst, symlinks=True)
    return dst


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    return path


def _nan_checkpoint(base, tmp_path):
    ckpt = torch.load(base["ckpt"], weights_only=True)
    ckpt["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    path = tmp_path / "diverged.pth"
    torch.save(ckpt, path)
    return path


def _train(base, tmp_path, *sets, work=None):
    argv = ["train", str(base["cfg"]), "--work-dir", str(work or tmp_path / "w"), "--no-progress", "--device", "cpu"]
    for s in sets:
        argv += ["--set", s]
    return argv


def _resume(base, tmp_path, *sets):
    return _train(base, tmp_path, *sets, work=_fresh_copy(base, tmp_path)) + ["--resume", "auto"]


def _test(base, tmp_path, ckpt, *sets):
    argv = ["test", str(base["cfg"]), str(ckpt), "--work-dir", str(tmp_path), "--no-progress", "--device", "cpu"]
    for s in sets:
        argv += ["--set", s]
    return argv


def _predict(ckpt, inputs, out, *extra):
    return ["predict", str(ckpt), *map(str, inputs), "--out", str(out), "--device", "cpu", "--no-progress", *extra]


# -- the cases: (argv builder, substrings the message must contain) --------------------------------
def diverging_run(base, t):
    return _train(base, t, "model.name=engine_toy_diverging", "model.kwargs={nan_at: 2}", "train.log_interval=4",
                  "train.checkpoint_interval=1", "train.max_keep_checkpoints=2"), ["iteration 2", "loss=nan", "lr"]


def resume_batch_size(base, t):
    return _resume(base, t, "data.batch_size=4"), ["iter_4.pth", "data.batch_size: 2 -> 4"]


def resume_train_split(base, t):
    return _resume(base, t, "data.train_split=validation"), ["data.train_split: 'training' -> 'validation'"]


def resume_lr(base, t):
    return _resume(base, t, "optimizer.lr=1.0"), ["optimizer.lr: 6e-05 -> 1.0"]


def resume_other_model(base, t):
    argv = _train(base, t, "model.kwargs={width: 16}", work=_fresh_copy(base, t)) + ["--resume", str(base["ckpt"])]
    return argv, ["iter_2.pth", "model.kwargs.width: (absent) -> 16"]


def locked_work_dir(base, t):
    from ssaseg.engine.workdir import WorkDir

    work = t / "locked"
    holder = WorkDir(work).locked()
    holder.__enter__()
    t.joinpath("holder").write_text("")  # keep it open for the duration of the test
    locked_work_dir.holder = holder
    return _train(base, t, work=work), [str(work), "in use by another training run"]


def fresh_run_in_used_dir(base, t):
    return _train(base, t, work=_fresh_copy(base, t)), ["already holds checkpoints", "--resume auto"]


def resume_only_damaged(base, t):
    work = _fresh_copy(base, t)
    for p in work.glob("iter_*.pth"):
        p.write_bytes(p.read_bytes()[:100])
    return _train(base, t, work=work) + ["--resume", "auto"], ["none of the checkpoints", "iter_4.pth"]


def nan_checkpoint_in_test(base, t):
    return _test(base, t, _nan_checkpoint(base, t)), ["diverged.pth", "non-finite"]


def predict_nan_checkpoint(base, t):
    return _predict(_nan_checkpoint(base, t), [_image(t / "x.png")], t / "out"), ["diverged.pth", "non-finite"]


def predict_would_overwrite(base, t):
    (t / "out").mkdir()
    (t / "out" / "x_mask.png").write_bytes(b"keep me")
    return _predict(base["ckpt"], [_image(t / "x.png")], t / "out"), ["x_mask.png", "--overwrite"]


def predict_huge_stored_test_scale(base, t):
    ckpt = torch.load(base["ckpt"], weights_only=True)
    ckpt["config"]["data"]["test_pipeline"]["scale"] = [40000, 40000]
    torch.save(ckpt, t / "huge.pth")
    return _predict(t / "huge.pth", [_image(t / "x.png")], t / "out"), ["huge.pth", "data.test_pipeline.scale"]


def predict_bad_input(base, t):
    _image(t / "in" / "good.png")
    (t / "in" / "bad.png").write_bytes(b"garbage")
    return _predict(base["ckpt"], [t / "in"], t / "out"), ["bad.png", "skipped 1 unreadable input"]


def disk_full_while_saving(base, t):
    return _train(base, t, "train.checkpoint_interval=1"), ["cannot write", str(t / "w" / "iter_1.pth")]


def label_symlink_loop(base, t):
    root = t / "ade"
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32)).save(root / "images" / split / f"img{i}.jpg")
            Image.new("L", (32, 32), 1).save(root / "annotations" / split / f"img{i}.png")
    ann = root / "annotations" / "training"
    (ann / "img1.png").unlink()
    os.symlink("loop.png", ann / "img1.png")
    os.symlink("img1.png", ann / "loop.png")
    return _train(base, t, "data.dataset=ade20k", f"data.root={root}", "model.num_classes=150"), [
        "img1.png", "symbolic link"]


def zero_byte_pth(base, t):
    (t / "empty.pth").write_bytes(b"")
    return _test(base, t, t / "empty.pth"), ["empty.pth"]


def zero_byte_safetensors(base, t):
    (t / "empty.safetensors").write_bytes(b"")
    return _test(base, t, t / "empty.safetensors"), ["empty.safetensors"]


def corrupt_safetensors(base, t):
    (t / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return _test(base, t, t / "bad.safetensors"), ["bad.safetensors"]


def _config_case(key_value, *expected):
    def case(base, t):
        return _train(base, t, key_value, "schedule.max_iters=1"), list(expected)

    case.__name__ = f"config {key_value}"
    return case


def duplicate_yaml_key(base, t):
    path = t / "dup.yaml"
    path.write_text(base["cfg"].read_text() + "schedule: {max_iters: 3}\n")
    return ["train", str(path), "--work-dir", str(t / "w"), "--no-progress", "--device", "cpu"], ["dup.yaml", "schedule"]


CASES = [
    diverging_run, resume_batch_size, resume_train_split, resume_lr, resume_other_model, locked_work_dir,
    fresh_run_in_used_dir, resume_only_damaged, nan_checkpoint_in_test, predict_nan_checkpoint,
    predict_would_overwrite, predict_huge_stored_test_scale, predict_bad_input, disk_full_while_saving,
    label_symlink_loop, zero_byte_pth,
    pytest.param(zero_byte_safetensors, id="zero_byte_safetensors"),
    pytest.param(corrupt_safetensors, id="corrupt_safetensors"),
    pytest.param(_config_case("optimizer.betas=[0.9]", "optimizer.betas"), id="betas_one"),
    pytest.param(_config_case("data.train_pipeline.crop_size=[0, 0]", "crop_size"),
                 id="crop_zero"),
    pytest.param(_config_case("data.train_pipeline.crop_size=[64]", "data.train_pipeline.crop_size"),
                 id="crop_one_value"),
    pytest.param(_config_case("evaluation.scales=[]", "evaluation.scales"), id="scales_empty"),
    pytest.param(_config_case("evaluation.scales=[0]", "evaluation.scales"), id="scales_zero"),
    pytest.param(_config_case("data.train_pipeline.std=[0, 1, 1]", "std"), id="std_zero"),
    pytest.param(_config_case("train.seed=1180591620717411303424", "train.seed"), id="seed_2_70"),
    pytest.param(duplicate_yaml_key, id="duplicate_yaml_key"),
]


def _case_id(case):
    return case.__name__ if callable(case) else None


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_user_error_exits_2_with_one_paragraph(case, base, tmp_path, capsys, request):
    argv, expected = case(base, tmp_path)
    capsys.readouterr()
    limit = case is disk_full_while_saving
    if limit:  # writes past 32 KiB fail with EFBIG, as on a full disk (config and log are smaller)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        code = run(argv)
    finally:
        if limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, old_handler)
        holder = getattr(case, "holder", None)
        if holder is not None:
            holder.__exit__(None, None, None)
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2, err
    assert "Traceback" not in err and len(message) == 1, err
    for text in expected:
        assert text in message[0], (text, message[0])


def test_nothing_good_is_lost_on_the_way(base, tmp_path, capsys):
    """The diverging run keeps its finite iter_1; a refused resume leaves the run dir as it was;
    a refused predict leaves the existing output."""
    argv, _ = diverging_run(base, tmp_path)
    assert run(argv) == 2
    assert sorted(p.name for p in (tmp_path / "w").glob("iter_*.pth")) == ["iter_1.pth"]
    ckpt = torch.load(tmp_path / "w" / "latest.pth", weights_only=True)
    assert ckpt["iteration"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())

    argv, _ = resume_lr(base, tmp_path / "r")
    work = tmp_path / "r" / "run"
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file() and p.name != ".lock"}
    assert run(argv) == 2
    after = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
