"""``ssaseg`` CLI: train / test / predict on a tiny config, and clear exit-2 errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from _engine_fakes import TINY_CLI_CONFIG  # importing _engine_fakes registers engine_toy
from ssaseg.cli import run



pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def tiny_cfg(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CLI_CONFIG.format(cache=tmp_path / "cache"))
    return path


def test_train_test_predict(tmp_path, tiny_cfg, capsys):
    work = tmp_path / "work"
    assert run(["train", str(tiny_cfg), "--work-dir", str(work), "--no-progress", "--device", "cpu"]) == 0
    ckpt = work / "iter_2.pth"
    assert ckpt.is_file() and (work / "config.yaml").is_file() and (work / "log.jsonl").is_file()
    assert list((work / "tb").glob("events.out.tfevents.*"))  # TensorBoard scalars
    # a tiny validation split keeps `test` fast: point val_split at a 3-image copy
    from ssaseg.data.demo import ensure_demo_dataset

    root = ensure_demo_dataset(tmp_path / "cache")
    val = root / "images" / "validation"
    small = sorted(val.glob("*.jpg"))[:3]
    for sub, ext in (("images", ".jpg"), ("annotations", ".png")):
        (root / sub / "mini").mkdir(exist_ok=True)
        for f in small:
            src = root / sub / "validation" / (f.stem + ext)
            (root / sub / "mini" / src.name).write_bytes(src.read_bytes())
    assert run(["test", str(tiny_cfg), str(ckpt), "--set", "data.val_split=mini", "--work-dir", str(work),
                "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "digit 9" in out
    assert list(work.glob("eval_single_scale_*.json"))

    # small[0] is in validation/ and, under the same name, in mini/: both predictions are kept
    pred_dir = tmp_path / "pred"
    assert run(["predict", str(ckpt), str(small[0]), str(root / "images" / "mini"), "--out", str(pred_dir),
                "--device", "cpu", "--no-progress"]) == 0
    assert "wrote 8 files" in capsys.readouterr().out
    masks = sorted(pred_dir.rglob("*_mask.png"))
    assert [m.relative_to(pred_dir).as_posix() for m in masks] == (
        [f"mini/{f.stem}_mask.png" for f in small] + [f"validation/{small[0].stem}_mask.png"])
    assert len(list(pred_dir.rglob("*_overlay.png"))) == 4
    mask = Image.open(masks[0])
    assert mask.mode == "P" and mask.size == (128, 128)  # original image size, class ids + palette
    ids = np.asarray(mask)
    assert ids.max() < 14
    palette = np.asarray(mask.getpalette()[: 14 * 3]).reshape(14, 3)
    overlay = np.asarray(Image.open(pred_dir / "mini" / f"{small[0].stem}_overlay.png").convert("RGB"))
    image = np.asarray(Image.open(small[0]).convert("RGB"))
    np.testing.assert_allclose(overlay, 0.5 * image + 0.5 * palette[ids], atol=1)


def test_user_errors_exit_2_without_traceback(tmp_path, tiny_cfg, capsys):
    assert run(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err

    assert run(["train", str(tiny_cfg), "--set", "optimizer.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.lr" in err and "did you mean" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_CLI_CONFIG.format(cache=tmp_path / "cache").replace("batch_size: 2", "batch_sise: 2"))
    assert run(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "data.batch_size" in err

    assert run(["predict", str(tmp_path / "nope.pth"), "x.jpg", "--out", str(tmp_path)]) == 2
    assert "nope.pth" in capsys.readouterr().err

    # an incompatible checkpoint: width-32 weights into a width-16 model
    from _engine_fakes import engine_toy

    ckpt = tmp_path / "w32.pth"
    torch.save({"model": engine_toy(14, "linear").state_dict()}, ckpt)
    assert run(["test", str(tiny_cfg), str(ckpt), "--set", "model.kwargs={width: 16}"]) == 2
    err = capsys.readouterr().err
    assert "w32.pth" in err and "does not fit" in err and "Traceback" not in err

    assert run(["test", str(tiny_cfg), str(ckpt), "--set", "model.num_classes=5"]) == 2
    assert "14 classes" in capsys.readouterr().err

    assert run(["train", str(tiny_cfg), "--set", "model.name=segformer_bO"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'segformer_bO'" in err and "did you mean segformer_b" in err


def test_module_entry_point_and_help(capsys):
    import subprocess
    import sys

    with pytest.raises(SystemExit) as info:
        run(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "test", "predict", "demo", "prepare", "benchmark"):
        assert cmd in out
    # `python -m ssaseg` exits with the command's code (2 for a missing config)
    proc = subprocess.run([sys.executable, "-m", "ssaseg", "train", "/no/such.yaml"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "/no/such.yaml" in proc.stderr and "Traceback" not in proc.stderr
