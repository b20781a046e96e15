"""``predict``: collision-free names that keep the input's relative path, no silent overwrite,
atomic writes, class-id palette masks, bad inputs skipped and counted, bounded memory for large
images (tiled upsampling, exact against the whole-image path), and a cap on the network size."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from _engine_fakes import FakeSegDataset, toy_config
from ssaseg.config import ConfigError
from ssaseg.engine import train
from ssaseg.engine.inference import predict_labels, predict_labels_tiled
from ssaseg.engine.predict import load_model_for_inference, predict_files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = tmp_path_factory.mktemp("run")
        cfg = toy_config(str(work), schedule={"max_iters": 1}, train={"checkpoint_interval": 0},
                         data={"test_pipeline": {"scale": [64, 64]}})
        return train(cfg, train_dataset=FakeSegDataset(4), val_dataset=FakeSegDataset(1, train=False),
                     progress=False, tensorboard=False).checkpoint
    finally:
        torch.set_num_threads(old)


def _image(path, size=(40, 56), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_same_names_in_two_folders_and_two_extensions_all_kept(tmp_path, checkpoint):
    inputs = [_image(tmp_path / "in" / "a" / "x.jpg"), _image(tmp_path / "in" / "a" / "x.png", seed=1),
              _image(tmp_path / "in" / "b" / "x.jpg", seed=2)]
    out = tmp_path / "out"
    res = predict_files(checkpoint, [str(p) for p in inputs], out, device="cpu")
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert on_disk == sorted(p.relative_to(out).as_posix() for p in res.written)
    assert on_disk == ["a/x.jpg_mask.png", "a/x.jpg_overlay.png", "a/x.png_mask.png", "a/x.png_overlay.png",
                       "b/x_mask.png", "b/x_overlay.png"]
    mask = Image.open(out / "b" / "x_mask.png")
    assert mask.mode == "P" and mask.size == (56, 40)
    assert np.asarray(mask).max() < 4 and mask.getpalette()[:12] == [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]


def test_folder_input_keeps_sub_folders(tmp_path, checkpoint):
    _image(tmp_path / "in" / "x.png")
    _image(tmp_path / "in" / "deep" / "x.png")
    res = predict_files(checkpoint, [str(tmp_path / "in")], tmp_path / "out", device="cpu")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in res.written) == [
        "deep/x_mask.png", "deep/x_overlay.png", "x_mask.png", "x_overlay.png"]
    # an output folder inside the input folder: earlier predictions are not taken as inputs
    res = predict_files(checkpoint, [str(tmp_path / "in")], tmp_path / "in" / "pred", device="cpu")
    assert len(res.written) == 4
    res = predict_files(checkpoint, [str(tmp_path / "in")], tmp_path / "in" / "pred", device="cpu", overwrite=True)
    assert len(res.written) == 4


def test_existing_outputs_are_never_overwritten_without_the_flag(tmp_path, checkpoint):
    src = _image(tmp_path / "x.png")
    out = tmp_path / "out"
    predict_files(checkpoint, [str(src)], out, device="cpu")
    (out / "x_overlay.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"x_(mask|overlay).png; pass --overwrite"):
        predict_files(checkpoint, [str(src)], out, device="cpu")
    assert (out / "x_overlay.png").read_bytes() == b"mine"
    predict_files(checkpoint, [str(src)], out, device="cpu", overwrite=True)
    assert Image.open(out / "x_overlay.png").size == (56, 40)


def test_bad_input_is_skipped_and_counted(tmp_path, checkpoint):
    good = _image(tmp_path / "in" / "good.png")
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"not a png")
    res = predict_files(checkpoint, [str(tmp_path / "in")], tmp_path / "out", device="cpu")
    assert [p for p, _ in res.skipped] == [bad] and "bad.png" in res.skipped[0][1]
    assert len(res.written) == 2 and (tmp_path / "out" / f"{good.stem}_mask.png").is_file()


def test_a_failed_write_leaves_no_torn_or_temp_file(tmp_path, checkpoint, monkeypatch):
    src = _image(tmp_path / "x.png")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="cannot write .*x_mask.png"):
        predict_files(checkpoint, [str(src)], tmp_path / "out", device="cpu")
    assert not list((tmp_path / "out").iterdir())


def test_stored_test_scale_is_capped(tmp_path, checkpoint):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["data"]["test_pipeline"]["scale"] = [40000, 40000]
    huge = tmp_path / "huge.pth"
    torch.save(ckpt, huge)
    with pytest.raises(ConfigError, match=r"data.test_pipeline.scale \[40000, 40000\].*limit"):
        predict_files(huge, [str(_image(tmp_path / "x.png"))], tmp_path / "out", device="cpu")


@pytest.mark.parametrize("kwargs", [{}, {"mode": "slide", "crop": (32, 32), "stride": (21, 21)},
                                    {"scales": (0.5, 1.0, 1.5), "flip": True}])
def test_tiled_labels_equal_whole_image_labels(checkpoint, kwargs):
    model = load_model_for_inference(checkpoint)[0]
    image = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        ref = predict_labels(model, image, (150, 205), **kwargs)
        got = predict_labels_tiled(model, image, (150, 205), tile=64, **kwargs)
    assert got.dtype == torch.uint8 and got.shape == ref.shape
    assert (got.long() != ref).float().mean() < 1e-4  # float rounding at near-ties only


def test_large_image_memory_is_bounded():
    """2500² output with 16 classes: the whole-image path allocates 16 x 6.25 M floats (400 MB)
    several times; the tiled one needs the uint8 result (6 MB) plus a few 256² tiles. Peak RSS
    growth is measured in a fresh process."""
    code = textwrap.dedent("""
        import resource, torch
        from ssaseg.engine.inference import predict_labels_tiled
        torch.set_num_threads(1)
        model = torch.nn.Conv2d(3, 16, 1)
        image = torch.randn(1, 3, 64, 64)
        with torch.inference_mode():
            predict_labels_tiled(model, image, (64, 64))  # warm up the allocator and kernels
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out = predict_labels_tiled(model, image, (2500, 2500), tile=256)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(out.shape[-1], out.dtype, grown // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    width, dtype, grown_mb = proc.stdout.split()
    assert width == "2500" and dtype == "torch.uint8"
    assert int(grown_mb) < 100, f"peak RSS grew by {grown_mb} MB"
