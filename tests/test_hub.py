"""save_pretrained / from_pretrained / convert: round trips, deployed weights, Hub IDs, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import ssaseg
from ssaseg.checkpoints import SSA_PARAMETER_NAMES
from ssaseg.cli import run
from ssaseg.hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, PretrainedError, convert_checkpoint, from_pretrained

pytestmark = pytest.mark.usefixtures("single_thread")

K = 5
TINY = dict(embed_dims=8, depths=(1, 1, 1, 1), channels=32)


def tiny(classifier: str = "ssa", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return ssaseg.create_model("segformer_b0", K, classifier=classifier, **{**TINY, **kw})


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("deploy", [False, True])
def test_round_trip_gives_equal_logits(tmp_path, deploy):
    model = tiny(classifier_kwargs={"tau": 10.0}, drop_path_rate=0.0)
    if deploy:
        model.eval().deploy()
    model.save_pretrained(tmp_path, classes=list("abcde"), test_pipeline={"scale": [64, 64], "resize_to_multiple": 32,
                                                                          "mean": [0, 0, 0], "std": [1, 1, 1]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CARD_NAME, CONFIG_NAME, WEIGHTS_NAME])
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["model"] == "segformer_b0" and config["classifier"] == "ssa" and config["num_classes"] == K
    assert config["model_args"] == {"embed_dims": 8, "depths": [1, 1, 1, 1], "channels": 32,
                                    "classifier_kwargs": {"tau": 10.0}, "drop_path_rate": 0.0}
    assert config["deployed"] is deploy and config["classes"] == list("abcde") and len(config["palette"]) == K
    assert config["test_pipeline"]["scale"] == [64, 64]
    loaded = from_pretrained(tmp_path)
    assert not loaded.training and loaded.classifier.tau == 10.0
    assert loaded.pretrained_config["classes"] == list("abcde")
    teacher = [k for k in loaded.state_dict() if ".teacher_" in k]
    assert bool(teacher) is not deploy  # a deployed model saves (and reloads) without its teacher
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(logits(loaded, x), logits(model, x), rtol=0, atol=0)
    # saving the loaded model again keeps its class names and pipeline
    loaded.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / CONFIG_NAME).read_text())
    assert again["classes"] == list("abcde") and again["test_pipeline"] == config["test_pipeline"]


def test_card_is_kept_and_files_are_atomic(tmp_path):
    model = tiny("linear")
    (tmp_path / CARD_NAME).write_text("my own card\n")
    model.save_pretrained(tmp_path)
    assert (tmp_path / CARD_NAME).read_text() == "my own card\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    mode = (tmp_path / WEIGHTS_NAME).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    card = tiny("linear")
    card.save_pretrained(tmp_path / "fresh")
    text = (tmp_path / "fresh" / CARD_NAME).read_text()
    assert text.startswith("---\nlibrary_name: ssaseg\n") and "segformer_b0" in text


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(PretrainedError, match="neither a directory nor a Hugging Face Hub ID"):
        from_pretrained(tmp_path / "missing")
    with pytest.raises(PretrainedError, match=f"has no {CONFIG_NAME}"):
        from_pretrained(tmp_path)
    (tmp_path / "f.pth").write_bytes(b"x")
    with pytest.raises(PretrainedError, match="is a file.*ssaseg convert"):
        from_pretrained(tmp_path / "f.pth")
    model = tiny("linear")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_NAME).write_bytes(b"torn")
    with pytest.raises(PretrainedError, match="cannot read .*model.safetensors"):
        from_pretrained(tmp_path / "m")
    tiny("ssa").save_pretrained(tmp_path / "m")  # SSA weights under a config that says linear
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps({**config, "classifier": "linear"}))
    with pytest.raises(ValueError, match="does not fit[\\s\\S]*unexpected classifier"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(PretrainedError, match="format_version 99"):
        from_pretrained(tmp_path / "m")
    bare = ssaseg.Segmentor(model.backbone, model.decoder, model.classifier)
    with pytest.raises(PretrainedError, match="built by ssaseg.create_model"):
        bare.save_pretrained(tmp_path / "bare")
    with pytest.raises(PretrainedError, match="backbone_weights|not a JSON value"):
        from ssaseg.hub import save_pretrained

        model.model_args = {**model.model_args, "norm": torch.nn.BatchNorm2d}
        save_pretrained(model, tmp_path / "nojson")


class _HubServer:
    """A minimal Hugging Face Hub file server on 127.0.0.1 (``/<user>/<repo>/resolve/<rev>/<file>``
    with the headers huggingface_hub reads), serving one saved-model directory as ``repo``."""

    def __init__(self, root, repo: str):
        import hashlib
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: bool) -> None:
                requests.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                ok = len(parts) == 5 and "/".join(parts[:2]) == repo and parts[2] == "resolve"
                path = root / parts[-1] if ok else None
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._send(False)

            def do_GET(self) -> None:
                self._send(True)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_hub_id_downloads_caches_and_works_offline(tmp_path):
    """A Hub ID goes through huggingface_hub (HF_ENDPOINT pointed at a local server): download,
    then offline from its cache; offline without a cache, or an unknown ID, is a clear error;
    a local directory never makes a request."""
    model = tiny().eval().deploy()
    model.save_pretrained(tmp_path / "repo")
    torch.save(logits(model, torch.ones(1, 3, 64, 64)), tmp_path / "expected.pt")
    server = _HubServer(tmp_path / "repo", "someone/tiny-segformer")
    code = (
        "import sys, torch, ssaseg\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "for source in sys.argv[1:]:\n"
        "    try:\n        m = ssaseg.from_pretrained(source)\n"
        "    except ValueError as err:\n        print(type(err).__name__, err)\n        continue\n"
        "    with torch.no_grad():\n        out = m(torch.ones(1, 3, 64, 64))\n"
        "    print('close' if torch.allclose(out, expected, rtol=0, atol=1e-5) else 'differs')\n"
    )

    def load(*sources: str, offline: bool = False) -> list[str]:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_OFFLINE": "1" if offline else "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        proc = subprocess.run([sys.executable, "-c", code, *sources], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    try:
        local, hub, unknown = load(str(tmp_path / "repo"), "someone/tiny-segformer", "nobody/no-such-model")
        assert local == "close" and hub == "close"
        assert all(r.startswith(("/someone/", "/nobody/")) for r in server.requests)  # none for the directory
        assert any(
            r.endswith("/someone/tiny-segformer/resolve/main/model.safetensors") for r in server.requests)
        assert unknown.startswith("PretrainedError") and "nobody/no-such-model" in unknown and "Hub" in unknown
        count = len(server.requests)
        cached, missing = load("someone/tiny-segformer", "nobody/no-such-model", offline=True)
        assert cached == "close" and len(server.requests) == count  # from the cache, no request
        assert missing.startswith("PretrainedError") and "offline" in missing
    finally:
        server.close()


def _official_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under the reference SSA-Seg (mmseg 0.30) names."""
    to_official = {v: k for k, v in SSA_PARAMETER_NAMES.items()}
    official = {}
    for key, value in model.state_dict().items():
        if key.startswith("decoder."):
            key = "decode_head." + key[len("decoder."):]
        elif key.startswith("classifier."):
            first, rest = key[len("classifier."):].split(".", 1)
            key = f"decode_head.{to_official[first]}.{rest}"
        official[key] = value
    official["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(K + 1)
    return official


def test_convert_official_checkpoint(tmp_path, capsys):
    """Model, classes and classifier kind come from the checkpoint; the load is strict; the
    result is deployed and gives the source model's logits."""
    src = tiny()
    path = tmp_path / "official.pth"
    torch.save({"meta": {"CLASSES": list("vwxyz")}, "state_dict": _official_layout(src)}, path)
    args = ["convert", str(path), str(tmp_path / "out"), "--model", "segformer_b0"]
    # the architecture arguments are not in an official checkpoint: the default B0 does not fit
    assert run(args) == 2
    assert "does not fit" in capsys.readouterr().err
    lines = convert_checkpoint(path, tmp_path / "out", model_name="segformer_b0", model_args=TINY)
    report = "\n".join(lines)
    assert "official" in report and "ssa_loss.criterion.empty_weight" in report and "deployed" in report
    loaded = from_pretrained(tmp_path / "out")
    assert loaded.num_classes == K and not loaded.classifier.has_teacher
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(logits(loaded, x), logits(src, x), rtol=0, atol=0)
    # strict: a stray tensor is reported, nothing is written
    torch.save({"state_dict": {**_official_layout(src), "decode_head.extra.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="unexpected decoder.extra.weight"):
        convert_checkpoint(path, tmp_path / "out2", model_name="segformer_b0", model_args=TINY)
    assert not (tmp_path / "out2").exists()


def test_convert_training_checkpoint_via_cli(tmp_path, capsys):
    src = tiny("linear")
    cfg = {"model": {"name": "segformer_b0", "classifier": "linear", "num_classes": K, "kwargs": dict(TINY),
                     "classifier_kwargs": {}},
           "data": {"dataset": "demo", "test_pipeline": {"scale": [128, 128], "resize_to_multiple": 32,
                                                         "mean": [1, 2, 3], "std": [4, 5, 6]}},
           "evaluation": {"mode": "whole", "crop_size": [64, 64], "stride": [32, 32], "flip": False, "scales": [1.0]}}
    path = tmp_path / "iter_2.pth"
    torch.save({"model": src.state_dict(), "config": cfg, "meta": {"classes": list("abcde"), "palette": [[1, 2, 3]] * K}},
               path)
    assert run(["convert", str(path), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "ssaseg layout" in out and "loaded strictly" in out
    config = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    assert config["classes"] == list("abcde") and config["test_pipeline"]["mean"] == [1, 2, 3]
    assert config["dataset"] == "demo" and config["model_args"] == {"embed_dims": 8, "depths": [1, 1, 1, 1], "channels": 32}
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(logits(from_pretrained(tmp_path / "out"), x), logits(src, x), rtol=0, atol=0)


def test_cli_test_and_predict_read_a_saved_directory(tmp_path, capsys):
    """`ssaseg test CONFIG DIR` and `ssaseg predict DIR IMAGE` use the saved model; predict takes
    the classes, palette and test pipeline from config.json."""
    import numpy as np
    from PIL import Image

    import _engine_fakes  # noqa: F401  (registers engine_toy)
    from ssaseg.data.demo import ensure_demo_dataset

    root = ensure_demo_dataset(tmp_path / "cache")
    for sub, ext in (("images", ".jpg"), ("annotations", ".png")):
        (root / sub / "mini").mkdir()
        for f in sorted((root / sub / "validation").glob(f"*{ext}"))[:2]:
            (root / sub / "mini" / f.name).write_bytes(f.read_bytes())
    torch.manual_seed(0)
    model = ssaseg.create_model("engine_toy", 14, classifier="ssa", width=16).eval().deploy()
    palette = [[i * 10, 0, 0] for i in range(14)]
    model.save_pretrained(tmp_path / "saved", palette=palette, classes=[f"c{i}" for i in range(14)],
                          test_pipeline={"scale": [64, 64], "resize_to_multiple": 32,
                                         "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]})
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "model: {name: engine_toy, classifier: ssa, num_classes: 14, kwargs: {width: 16}, sync_bn: false}\n"
        f"data: {{dataset: demo, root: {tmp_path / 'cache'}, val_split: mini, num_workers: 0,"
        " test_pipeline: {scale: [64, 64]}}\n"
    )
    argv = ["test", str(cfg), str(tmp_path / "saved"), "--work-dir", str(tmp_path / "w"), "--no-progress", "--device", "cpu"]
    assert run(argv) == 0
    assert "mIoU" in capsys.readouterr().out
    ssaseg.create_model("engine_toy", 5, classifier="ssa", width=16).save_pretrained(tmp_path / "five")
    assert run(argv[:2] + [str(tmp_path / "five")] + argv[3:]) == 2
    assert "holds a 5-class engine_toy" in capsys.readouterr().err

    image = sorted((root / "images" / "mini").glob("*.jpg"))[0]
    assert run(["predict", str(tmp_path / "saved"), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    png = Image.open(tmp_path / "pred" / f"{image.stem}_mask.png")
    mask = np.asarray(png)  # class ids; the PNG's palette colours them
    assert png.mode == "P" and mask.shape == (128, 128)
    assert set(np.unique(mask).tolist()) <= set(range(len(palette)))
    flat = png.getpalette()[: 3 * len(palette)]
    assert [flat[i : i + 3] for i in range(0, len(flat), 3)] == [list(c) for c in palette]  # the saved palette is used
