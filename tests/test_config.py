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


def test_dataset_defaults_sit_between_schema_and_files(tmp_path):
    pc = write(tmp_path / "pc.yaml", "model: {name: segformer_b0, num_classes: 59}\ndata: {dataset: pascal_context59}\n")
    cfg = load_config(pc)
    train, test = cfg["data"]["train_pipeline"], cfg["data"]["test_pipeline"]
    # PASCAL-Context's own sizes (mmseg's pascal_context_59.py), not the ADE20K schema defaults.
    assert train["scale"] == [520, 520] and train["crop_size"] == [480, 480] and train["ratio_range"] == [0.5, 2.0]
    assert test["scale"] == [520, 520] and test["resize_to_multiple"] is None
    assert train["cat_max_ratio"] == 0.75 and train["std"] == [58.395, 57.12, 57.375]  # schema defaults remain
    # the same keys without a dataset choice fall back to the schema (ADE20K) values
    ade = load_config(write(tmp_path / "ade.yaml", "model: {name: a, num_classes: 150}\ndata: {dataset: ade20k}\n"))
    assert ade["data"]["train_pipeline"]["crop_size"] == [512, 512] and ade["data"]["test_pipeline"]["resize_to_multiple"] == 32
    # _base_ < file < --set, all above the dataset's defaults
    write(tmp_path / "b.yaml", "data: {dataset: pascal_context59, train_pipeline: {crop_size: [400, 400], scale: [600, 600]}}\n")
    child = write(tmp_path / "c.yaml", "_base_: b.yaml\nmodel: {name: a, num_classes: 59}\ndata: {train_pipeline: {scale: [700, 700]}}\n")
    cfg = load_config(child, ["data.train_pipeline.crop_size=[300, 300]"])
    assert cfg["data"]["train_pipeline"]["scale"] == [700, 700]
    assert cfg["data"]["train_pipeline"]["crop_size"] == [300, 300]
    assert cfg["data"]["test_pipeline"]["scale"] == [520, 520]
    # the dataset chosen by --set decides which defaults apply
    cfg = load_config(tmp_path / "ade.yaml", ["data.dataset=demo"])
    assert cfg["data"]["train_pipeline"]["crop_size"] == [128, 128]


def test_unknown_dataset_is_a_config_error(tmp_path):
    cfg_path = write(tmp_path / "x.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: pascal_context_59}\n")
    with pytest.raises(ConfigError, match=r"data.dataset must be one of .*'pascal_context_59'.*did you mean 'pascal_context59'"):
        load_config(cfg_path)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.betas=[0.9]", "optimizer.betas must be 2 numbers in [0, 1), got [0.9]"),
        ("optimizer.betas=[0.9, 1.0]", "optimizer.betas must be 2 numbers in [0, 1)"),
        ("data.train_pipeline.crop_size=[0, 0]", "data.train_pipeline.crop_size must be 2 positive integers, got [0, 0]"),
        ("data.train_pipeline.crop_size=[64]", "data.train_pipeline.crop_size must be 2 positive integers, got [64]"),
        ("data.train_pipeline.crop_size=[64.5, 64]", "data.train_pipeline.crop_size must be a list of integers"),
        ("evaluation.scales=[]", "evaluation.scales must be a non-empty list of positive numbers, got []"),
        ("evaluation.scales=[0]", "evaluation.scales must be a non-empty list of positive numbers, got [0]"),
        ("data.test_pipeline.std=[58.4, 0, 57.4]", "data.test_pipeline.std must be 3 positive numbers"),
        (f"train.seed={2**70}", f"train.seed must be an integer in 0..2**63-1, got {2**70}"),
        ("train.seed=-1", "train.seed must be an integer in 0..2**63-1"),
        ("schedule.max_iters=0", "schedule.max_iters must be positive, got 0"),
        ("model.classifier=ssaa", "model.classifier must be one of linear, ssa, cac, got 'ssaa' (did you mean 'ssa'?)"),
        ("optimizer.layer_decay={rate: 0.9}", "optimizer.layer_decay needs num_layers"),
        ("model.num_classes=null", "model.num_classes must be set"),
    ],
)
def test_bad_values_name_key_value_and_expectation(base_tree, override, expected):
    cfg_path = write(base_tree / "ok.yaml", "_base_: _base_/data.yaml\nmodel: {name: a}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_path, [override])
    assert expected in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_bad_value_in_a_file_names_the_file(tmp_path):
    cfg_path = write(tmp_path / "bad.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: demo, test_pipeline: {std: [1, 0, 1]}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: data.test_pipeline.std must be 3 positive numbers .*got \[1, 0, 1\]"):
        load_config(cfg_path)


def test_duplicate_yaml_keys_are_refused(tmp_path):
    cfg_path = write(tmp_path / "dup.yaml", "model:\n  name: a\n  num_classes: 2\n  name: b\ndata: {dataset: demo}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_path)
    msg = str(info.value)
    assert str(cfg_path.resolve()) in msg and "'name'" in msg and "line 4" in msg and "line 2" in msg
    top = write(tmp_path / "dup2.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: demo}\nmodel: {name: b}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'model' on line 3"):
        load_config(top)
    ok = write(tmp_path / "ok.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: demo}\n")
    with pytest.raises(ConfigError, match=r"--set .*duplicate key 'a'"):
        load_config(ok, ["model.kwargs={a: 1, a: 2}"])


def test_classifier_choices_come_from_the_registry(tmp_path, monkeypatch):
    from ssaseg import classifiers

    cfg_path = write(tmp_path / "c.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: demo}\n")
    with pytest.raises(ConfigError, match="one of linear, ssa"):
        load_config(cfg_path, ["model.classifier=cosine"])
    monkeypatch.setitem(classifiers.CLASSIFIERS, "cosine", classifiers.LinearClassifier)
    assert load_config(cfg_path, ["model.classifier=cosine"])["model"]["classifier"] == "cosine"


def test_defaults_are_fresh_copies(tmp_path):
    import ssaseg.config as config_module
    from ssaseg.config import validate_config
    from ssaseg.config.schema import schema_defaults

    config_module.DEFAULTS["model"]["kwargs"]["x"] = 1  # a caller mutating its copy does not leak
    assert config_module.DEFAULTS["model"]["kwargs"] == {}
    DEFAULTS["model"]["kwargs"]["y"] = 2  # not even the copy imported at the top of this file
    cfg = load_config(write(tmp_path / "c.yaml", "model: {name: a, num_classes: 2}\ndata: {dataset: demo}\n"))
    assert cfg["model"]["kwargs"] == {}
    del DEFAULTS["model"]["kwargs"]["y"]
    assert schema_defaults()["data"]["train_pipeline"]["mean"] == [123.675, 116.28, 103.53]
    full = merge_config(schema_defaults(), {"model": {"name": "a", "num_classes": 3}, "data": {"dataset": "demo"}})
    assert validate_config(full) is full


def test_schema_doc_is_generated_from_the_schema():
    from ssaseg.config.docs import render_schema_doc

    committed = (CONFIGS / "SCHEMA.md").read_text(encoding="utf-8")
    assert committed == render_schema_doc(), "configs/SCHEMA.md is stale: run `python -m ssaseg.config`"


def test_schema_doc_command_checks_and_writes(tmp_path, monkeypatch):
    from ssaseg.config import __main__ as schema_cli
    from ssaseg.config import docs

    assert schema_cli.main(["--check"]) == 0
    stale = write(tmp_path / "SCHEMA.md", "old text\n")
    monkeypatch.setattr(schema_cli, "SCHEMA_PATH", stale)
    assert schema_cli.main(["--check"]) == 1
    assert docs.write_schema_doc(stale) is True and docs.write_schema_doc(stale) is False
    assert stale.read_text(encoding="utf-8") == docs.render_schema_doc()
