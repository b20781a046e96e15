"""Typed pretrained configs, the download cache and backbone-weight loading (ssaseg.pretrained),
and the weights-file reader's user errors (ssaseg.weights).

Downloads are served by a local HTTP server on 127.0.0.1 that each test starts (or a file://
URL); nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import http.server
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import ssaseg
from ssaseg import pretrained
from ssaseg.engine.build import build_model
from ssaseg.pretrained import DownloadError, PretrainedCfg, load_backbone_weights
from ssaseg.weights import WeightsError, load_weights, read_state_dict

TINY_MIT = dict(embed_dims=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), channels=16)
MODEL = "segformer_b0"


def _tiny(seed: int) -> ssaseg.Segmentor:
    torch.manual_seed(seed)
    return ssaseg.create_model(MODEL, num_classes=3, classifier="linear", **TINY_MIT).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SSASEG_CACHE", str(root))
    return root / "weights"


@pytest.fixture
def published(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny MiT backbone file in the published (mmseg) layout, with its weights."""
    source = _tiny(0).backbone.state_dict()
    served = tmp_path / "served"
    served.mkdir()
    path = served / "mit_tiny-abc.pth"
    torch.save({"meta": {}, "state_dict": source}, path)
    return path, source


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server(published) -> Iterator[tuple[str, list[str]]]:
    """``(base URL, request log)`` of an HTTP server on 127.0.0.1 serving the published file's folder."""
    log: list[str] = []
    handler = functools.partial(type("H", (_Handler,), {"requests": log}), directory=str(published[0].parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _register(monkeypatch, url: str | None, sha256: str | None, tag: str = "test", file_name: str = "mit_tiny-abc.pth") -> PretrainedCfg:
    cfg = PretrainedCfg(file_name=file_name, converter="mit", source="test fixture", license="Apache-2.0",
                        url=url, sha256=sha256)
    monkeypatch.setitem(pretrained._REGISTRY, (MODEL, tag), cfg)
    return cfg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_loaded(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, source[key]), key


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Registry


def test_every_model_registers_typed_imagenet_weights():
    import pkgutil

    import ssaseg.zoo
    from ssaseg.models import architecture_of

    zoo_modules = {m.name for m in pkgutil.iter_modules(ssaseg.zoo.__path__)}
    zoo_models = [n for n in ssaseg.list_models() if architecture_of(n) in zoo_modules]  # not test-registered toys
    assert len(zoo_models) >= 20
    for name in zoo_models:
        cfg = pretrained.get_pretrained_cfg(name, "imagenet")
        assert isinstance(cfg, PretrainedCfg) and cfg.converter and cfg.license and cfg.source
        assert cfg.url is None or cfg.url.endswith(cfg.file_name)
        if cfg.sha256 is not None:  # torch.hub / OpenMMLab convention: name-<sha256[:8]>.pth
            assert cfg.file_name.rsplit(".", 1)[0].endswith("-" + cfg.sha256)
        model_converters = {c.converter for (m, _), c in pretrained._REGISTRY.items() if m == name}
        assert len(model_converters) == 1
    assert "segformer_b5.imagenet" in pretrained.list_pretrained("segformer_*")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.url = "elsewhere"  # type: ignore[misc]
    with pytest.raises(KeyError, match="known tags: imagenet"):
        pretrained.get_pretrained_cfg("segformer_b5", "coco")


def test_hash_prefix_must_be_hex():
    with pytest.raises(ValueError, match="sha256"):
        PretrainedCfg(file_name="x-zz.pth", converter="mit", source="s", license="l", sha256="zz")


# ---------------------------------------------------------------------------------------------
# Downloads


def test_download_from_local_server_loads_and_caches(cache, published, server, monkeypatch):
    path, source = published
    base, log = server
    _register(monkeypatch, base + path.name, _sha(path)[:8])
    model = _tiny(1)
    load_backbone_weights(model, MODEL, "test")
    _assert_loaded(model, source)
    cached = cache / path.name
    assert cached.read_bytes() == path.read_bytes()
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o666 & ~umask
    load_backbone_weights(_tiny(2), MODEL, "test")  # second use: from the cache
    assert log == [f"/{path.name}"]


def test_download_from_file_url(cache, published, monkeypatch):
    path, source = published
    _register(monkeypatch, path.as_uri(), None)
    model = _tiny(1)
    load_backbone_weights(model, MODEL, "test")
    _assert_loaded(model, source)
    assert (cache / path.name).is_file()


def test_hash_mismatch_is_refused_and_leaves_no_file(cache, published, server, monkeypatch):
    path, _ = published
    base, _ = server
    wrong = "0" * 8 if not _sha(path).startswith("0" * 8) else "f" * 8
    _register(monkeypatch, base + path.name, wrong)
    with pytest.raises(DownloadError) as err:
        load_backbone_weights(_tiny(1), MODEL, "test")
    message = str(err.value)
    assert f"expected {wrong}" in message and _sha(path)[:8] in message and base + path.name in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_error_names_key_url_and_path(cache, published, monkeypatch):
    path, _ = published
    url = f"http://127.0.0.1:{_closed_port()}/{path.name}"
    _register(monkeypatch, url, None)
    with pytest.raises(DownloadError) as err:
        load_backbone_weights(_tiny(1), MODEL, "test")
    message = str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI's user-error path: exit 2
    assert "model.backbone_weights" in message and url in message and str(cache / path.name) in message
    assert "\n" not in message
    assert not cache.exists() or list(cache.iterdir()) == []


def test_page_only_weights_say_where_to_put_the_file(cache, monkeypatch):
    cfg = _register(monkeypatch, None, None, file_name="eformer_tiny.pth")
    with pytest.raises(DownloadError, match="no direct download") as err:
        load_backbone_weights(_tiny(1), MODEL, "test")
    assert str(cache / cfg.file_name) in str(err.value) and "test fixture" in str(err.value)


def test_hand_placed_file_is_used_and_hash_checked(cache, published, monkeypatch):
    path, source = published
    _register(monkeypatch, None, _sha(path)[:8])
    cache.mkdir(parents=True)
    (cache / path.name).write_bytes(path.read_bytes())
    model = _tiny(1)
    load_backbone_weights(model, MODEL, "test")
    _assert_loaded(model, source)
    (cache / path.name).write_bytes(path.read_bytes()[:-10])  # truncated copy
    with pytest.raises(WeightsError, match="sha256"):
        load_backbone_weights(_tiny(1), MODEL, "test")


def test_cli_exits_2_with_one_paragraph_when_offline(cache, monkeypatch, capsys, tmp_path):
    """The README's training command with ``model.backbone_weights: imagenet`` and no network."""
    from ssaseg import cli

    ssaseg.list_models()
    cfg = pretrained.get_pretrained_cfg(MODEL, "imagenet")
    url = f"http://127.0.0.1:{_closed_port()}/{cfg.file_name}"
    monkeypatch.setitem(pretrained._REGISTRY, (MODEL, "imagenet"), dataclasses.replace(cfg, url=url))
    config = Path(ssaseg.__file__).parent / "configs" / "demo" / "segformer_b0_linear.yaml"
    code = cli.run(["train", str(config), "--set", "model.backbone_weights=imagenet", "--set", "schedule.max_iters=1",
                    "--work-dir", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "model.backbone_weights" in err and url in err
    assert str(cache / cfg.file_name) in err


# ---------------------------------------------------------------------------------------------
# Local files


def test_local_path_still_works_in_any_known_layout(published, tmp_path):
    path, source = published
    model = _tiny(1)
    load_backbone_weights(model, MODEL, str(path))
    _assert_loaded(model, source)
    safetensors_path = tmp_path / "mit.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in source.items()}, str(safetensors_path))
    model = _tiny(2)
    load_backbone_weights(model, MODEL, safetensors_path)
    _assert_loaded(model, source)


def test_missing_published_file_names_url_and_tag(tmp_path):
    ssaseg.list_models()
    cfg = pretrained.get_pretrained_cfg(MODEL, "imagenet")
    missing = tmp_path / "pretrained" / cfg.file_name
    with pytest.raises(WeightsError) as err:
        load_backbone_weights(_tiny(1), MODEL, str(missing))
    message = str(err.value)
    assert str(missing) in message and cfg.url in message and "model.backbone_weights: imagenet" in message


def test_unknown_weights_value():
    with pytest.raises(WeightsError, match="neither an existing file nor a pretrained tag.*imagenet"):
        load_backbone_weights(_tiny(1), MODEL, "imagenet22k")


def test_weights_that_do_not_fit_name_file_and_keys(published):
    path, _ = published
    torch.manual_seed(0)
    wider = ssaseg.create_model(MODEL, num_classes=3, classifier="linear", **{**TINY_MIT, "embed_dims": 16})
    with pytest.raises(WeightsError) as err:
        load_backbone_weights(wider, MODEL, str(path))
    assert str(path) in str(err.value) and "shape mismatch" in str(err.value)


def test_build_model_loads_backbone_weights_only_when_asked(published):
    path, source = published
    cfg = {"model": {"name": MODEL, "num_classes": 3, "classifier": "linear", "kwargs": dict(TINY_MIT),
                     "classifier_kwargs": {}, "backbone_weights": str(path), "checkpoint": None}}
    torch.manual_seed(5)
    _assert_loaded(build_model(cfg), source)
    torch.manual_seed(5)
    skipped = build_model(cfg, load_weights=False)
    assert not torch.equal(skipped.backbone.layers[0][0].projection.weight, source["layers.0.0.projection.weight"])


# ---------------------------------------------------------------------------------------------
# Unreadable files: one user error naming the file


def _corrupt_files(tmp_path: Path, source: dict[str, torch.Tensor]) -> dict[str, Path]:
    good_pth, good_st = tmp_path / "good.pth", tmp_path / "good.safetensors"
    torch.save(source, good_pth)
    save_file({k: v.contiguous() for k, v in source.items()}, str(good_st))
    files = {
        "zero.pth": b"",
        "zero.safetensors": b"",
        "truncated.pth": good_pth.read_bytes()[: good_pth.stat().st_size // 2],
        "truncated.safetensors": good_st.read_bytes()[: good_st.stat().st_size // 2],
        "garbage.pth": b"this is an HTML error page, not a checkpoint",
        "garbage.safetensors": b"\xff" * 64,
    }
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    return out


def test_corrupt_zero_byte_and_truncated_files_name_the_file(published, tmp_path):
    _, source = published
    for name, path in _corrupt_files(tmp_path, source).items():
        with pytest.raises(WeightsError) as err:
            load_backbone_weights(_tiny(1), MODEL, str(path))
        message = str(err.value)
        assert str(path) in message, name
        assert "Traceback" not in message
        if name.startswith("zero"):
            assert "empty" in message
        elif name.startswith("truncated"):
            assert "truncated or corrupt" in message


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")


def test_allow_list_is_scoped_to_one_load(tmp_path):
    """SeaFormer files pickle an argparse.Namespace: allowed for that converter's loads only."""
    import ssaseg.backbones.seaformer  # noqa: F401  (registers the "seaformer" converter)

    path = tmp_path / "ns.pth"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {"x": torch.zeros(1)}}, path)
    with pytest.raises(WeightsError, match="argparse.Namespace"):
        read_state_dict(path)
    assert set(read_state_dict(path, allowed_globals=(argparse.Namespace,))) == {"x"}
    with pytest.raises(WeightsError, match="argparse.Namespace"):
        read_state_dict(path)  # nothing was registered process-wide
    assert argparse.Namespace not in torch.serialization.get_safe_globals()
    with pytest.raises(WeightsError, match="ns.pth"):  # read fine, but the keys are not SeaFormer's
        load_weights(torch.nn.Linear(1, 1), path, "seaformer")
