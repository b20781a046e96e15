"""Config system: _base_ inheritance, defaults, validation messages, --set overrides, saving."""
from pathlib import Path

import pytest
import yaml

from ssaseg.config import DEFAULTS, ConfigError, load_config, merge_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "ssaseg" / "configs"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def base_tree(tmp_path):
    write(tmp_path / "_base_/data.yaml", "model: {num_classes: 5}\ndata: {dataset: demo, batch_size: 8}\n")
    write(tmp_path / "_base_/sched.yaml", "schedule: {max_iters: 100}\noptimizer: {param_rules: {norm: {decay_mult: 0}}}\n")
    return tmp_path


def test_inheritance_defaults_and_override_order(base_tree):
    cfg_path = write(
        base_tree / "exp/run.yaml",
        "_base_: [../_base_/data.yaml, ../_base_/sched.yaml]\n"
        "model: {name: segformer_b0}\n"
        "data: {batch_size: 2}\n"
        "optimizer: {param_rules: {decoder: {lr_mult: 10}}}\n",
    )
    cfg = load_config(cfg_path, ["optimizer.lr=1e-4", "data.train_pipeline.crop_size=[64, 64]"])
    assert cfg["model"] == {**DEFAULTS["model"], "name": "segformer_b0", "num_classes": 5}
    assert cfg["data"]["batch_size"] == 2 and cfg["data"]["dataset"] == "demo"
    assert cfg["schedule"]["max_iters"] == 100 and cfg["schedule"]["warmup_iters"] == 1500
    # dicts merge recursively: both rules survive
    assert cfg["optimizer"]["param_rules"] == {"norm": {"decay_mult": 0}, "decoder": {"lr_mult": 10}}
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-4) and isinstance(cfg["optimizer"]["lr"], float)
    assert cfg["data"]["train_pipeline"]["crop_size"] == [64, 64]
    assert cfg["train"]["work_dir"] == str(Path("runs") / "run")


def test_delete_replaces_inherited_mapping(base_tree):
    cfg_path = write(
        base_tree / "r.yaml",
        "_base_: _base_/sched.yaml\nmodel: {name: x, num_classes: 2}\ndata: {dataset: demo}\n"
        "optimizer: {param_rules: {_delete_: true, head: {lr_mult: 10}}}\n",
    )
    assert load_config(cfg_path)["optimizer"]["param_rules"] == {"head": {"lr_mult": 10}}


def test_unknown_key_names_file_and_suggests(base_tree):
    bad = write(base_tree / "_base_/bad.yaml", "optimizer: {weight_decy: 0.1}\n")
    cfg_path = write(base_tree / "child.yaml", "_base_: _base_/bad.yaml\nmodel: {name: a, num_classes: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_path)
    msg = str(info.value)
    assert str(bad.resolve()) in msg and "optimizer.weight_decy" in msg and "optimizer.weight_decay" in msg


def test_bad_set_values(base_tree):
    cfg_path = write(base_tree / "ok.yaml", "_base_: _base_/data.yaml\nmodel: {name: a}\n")
    cases = {
        "train.evl_interval=5": "train.eval_interval",
        "train.amp=fast": "one of auto, bf16, fp16, off",
        "data.batch_size=two": "must be an integer",
        "nokey": "expected KEY=VALUE",
        "optimizer.param_rules={x: {lr_mul: 2}}": "lr_mult",
        "model.sync_bn=3": "must be a boolean",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(cfg_path, [text])
        assert expected in str(info.value) and "--set" in str(info.value), (text, str(info.value))
    assert load_config(cfg_path, ["train.amp=off"])["train"]["amp"] == "off"  # YAML reads off as False


def test_missing_files_and_required_keys(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    missing_base = write(tmp_path / "m.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml"):
        load_config(missing_base)
    no_model = write(tmp_path / "n.yaml", "data: {dataset: demo}\n")
    with pytest.raises(ConfigError, match="model.name must be set"):
        load_config(no_model)
    loop = write(tmp_path / "loop.yaml", "_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)


def test_repository_bases_are_valid_and_roundtrip(tmp_path):
    for name in ("ade20k", "coco_stuff10k", "pascal_context59"):
        for sched in ("poly_160k", "poly_80k"):
            cfg_path = write(
                tmp_path / f"{name}_{sched}.yaml",
                f"_base_: [{CONFIGS}/_base_/datasets/{name}.yaml, {CONFIGS}/_base_/schedules/{sched}.yaml]\n"
                "model: {name: segformer_b0}\n",
            )
            cfg = load_config(cfg_path)
            save_config(cfg, tmp_path / "out" / "config.yaml")
            reloaded = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
            assert reloaded == cfg
            assert load_config(tmp_path / "out" / "config.yaml") == cfg
    demo_dir = CONFIGS / "demo"
    for path in sorted(demo_dir.glob("*.yaml")):
        load_config(path)


def test_merge_config_does_not_alias():
    a = {"x": {"y": [1, 2]}}
    out = merge_config(a, {"x": {"z": 1}})
    out["x"]["y"].append(3)
    assert a == {"x": {"y": [1, 2]}}
