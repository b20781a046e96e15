"""ssaseg classifiers on smp, Hugging Face and timm models, and ``ssaseg --import``.

Each adapter: one optimiser step, eval logits, and a save/load round trip that reproduces them.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import ssaseg
from ssaseg.classifiers import CACClassifier, LinearClassifier, SSAClassifier
from ssaseg.cli import run

KINDS = {"ssa": SSAClassifier, "cac": CACClassifier, "linear": LinearClassifier}


pytestmark = pytest.mark.usefixtures("single_thread")


def _batch(num_classes: int, size: int = 64, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g)
    targets = torch.randint(0, num_classes, (batch, size, size), generator=g)
    targets[:, :4] = 255
    return images, targets


def _train_step(model: torch.nn.Module, images, targets) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.classifier.state_dict().items()}
    losses = model.train()(images, targets)
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    assert torch.isfinite(losses["loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.classifier.state_dict().items())
    return losses


def _roundtrip(model: torch.nn.Module, fresh: torch.nn.Module, images, tmp_path) -> None:
    """Eval logits survive ssaseg's checkpoint writer/reader into a freshly built model."""
    from ssaseg.checkpoints import load_checkpoint
    from ssaseg.engine.state import atomic_torch_save

    model.eval()
    with torch.no_grad():
        want = model(images)
    atomic_torch_save({"model": model.state_dict()}, tmp_path / "model.pth")
    load_checkpoint(fresh, tmp_path / "model.pth")
    with torch.no_grad():
        got = fresh.eval()(images)
    assert want.shape == (images.shape[0], model.num_classes, *images.shape[-2:])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- smp
smp = pytest.importorskip("segmentation_models_pytorch")


@pytest.mark.parametrize(
    ("arch", "kind"),
    [("Unet", "ssa"), ("UnetPlusPlus", "linear"), ("FPN", "cac"), ("DeepLabV3Plus", "ssa"), ("Segformer", "cac"), ("UPerNet", "ssa")],
)
def test_smp_train_eval_save_load(arch: str, kind: str, tmp_path) -> None:
    from ssaseg.integrations.smp import from_smp

    def build():
        torch.manual_seed(0)
        net = getattr(smp, arch)("resnet18", encoder_weights=None, encoder_depth=5, classes=5)
        return from_smp(net, classifier=kind)

    model = build()
    head = getattr(smp, arch)("resnet18", encoder_weights=None, classes=5).segmentation_head[0]
    assert isinstance(model.classifier, KINDS[kind]) and model.classifier.in_channels == head.in_channels
    images, targets = _batch(5)
    losses = _train_step(model, images, targets)
    assert "loss" in losses and (kind != "ssa" or "kd_semantic" in losses)
    _roundtrip(model, build(), images, tmp_path)
    model.deploy()


def test_smp_rejects_activation_and_aux_head() -> None:
    from ssaseg.integrations.smp import from_smp

    with pytest.raises(ValueError, match="activation=None"):
        from_smp(smp.FPN("resnet18", encoder_weights=None, classes=3, activation="sigmoid"))
    with pytest.raises(ValueError, match="aux_params"):
        from_smp(smp.FPN("resnet18", encoder_weights=None, classes=3, aux_params={"classes": 3}))
    with pytest.raises(ValueError, match="segmentation_head"):
        from_smp(torch.nn.Conv2d(3, 3, 1))


# ---------------------------------------------------------------------------------------- HF
transformers = pytest.importorskip("transformers")


def _segformer_config(**kwargs):
    return transformers.SegformerConfig(
        num_encoder_blocks=4, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[8, 4, 2, 1], decoder_hidden_size=32, num_labels=5, **kwargs
    )


def _upernet_config(**kwargs):
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    return transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=32, auxiliary_in_channels=32, auxiliary_channels=16, num_labels=5, **kwargs
    )


@pytest.mark.parametrize(("family", "kind"), [("segformer", "ssa"), ("segformer", "cac"), ("upernet", "cac"), ("upernet", "ssa")])
def test_hf_train_eval_save_pretrained(family: str, kind: str, tmp_path) -> None:
    from transformers.modeling_outputs import SemanticSegmenterOutput

    from ssaseg.integrations.hf import SegformerWithPixelClassifier, UperNetWithPixelClassifier

    cls, config = {
        "segformer": (SegformerWithPixelClassifier, _segformer_config),
        "upernet": (UperNetWithPixelClassifier, _upernet_config),
    }[family]
    torch.manual_seed(0)
    model = cls(config(ssaseg_classifier=kind))
    assert isinstance(model.pixel_classifier, KINDS[kind])
    images, labels = _batch(5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model.train()(pixel_values=images, labels=labels)
    assert isinstance(out, SemanticSegmenterOutput) and out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        evaluated = model(pixel_values=images, labels=labels)
    expected_size = (16, 16) if family == "segformer" else (64, 64)  # HF's own output sizes
    assert evaluated.logits.shape == (2, 5, *expected_size) and torch.isfinite(evaluated.loss)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.pixel_classifier, KINDS[kind])
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=images).logits, evaluated.logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="labels"):
        loaded.train()(pixel_values=images)


def test_hf_plain_checkpoint_gets_ssaseg_classifier(tmp_path) -> None:
    """from_pretrained of a plain HF SegFormer keeps its weights and gives the new classifier
    ssaseg's init (conv_seg N(0, 0.01), PyTorch default MLPs), not HF's N(0, 0.02)."""
    from ssaseg.integrations.hf import SegformerWithPixelClassifier, with_pixel_classifier

    torch.manual_seed(0)
    plain = transformers.SegformerForSemanticSegmentation(_segformer_config())
    plain.save_pretrained(tmp_path)
    model = SegformerWithPixelClassifier.from_pretrained(tmp_path, ssaseg_classifier="cac")
    ours = model.state_dict()
    for key, value in plain.state_dict().items():
        if not key.startswith("decode_head.classifier."):
            assert torch.equal(ours[key], value), key
    conv_seg = model.pixel_classifier.conv_seg
    assert 0.005 < conv_seg.weight.std() < 0.02 and not conv_seg.bias.any()
    first = model.pixel_classifier.semantic_proj[0].weight
    assert first.abs().max() <= 1 / first.shape[1] ** 0.5  # kaiming-uniform bound of nn.Linear
    assert first.abs().max() > 0.5 / first.shape[1] ** 0.5
    converted = with_pixel_classifier(plain, "ssa", tau=10.0)
    assert converted.pixel_classifier.tau == 10.0 and converted.config.ssaseg_classifier_kwargs["tau"] == 10.0
    carried = converted.state_dict()
    assert all(torch.equal(carried[k], v) for k, v in plain.state_dict().items() if not k.startswith("decode_head.classifier."))
    with pytest.raises(ValueError, match="SegformerForSemanticSegmentation"):
        with_pixel_classifier(torch.nn.Linear(2, 2))


def test_hf_trainer_runs(tmp_path) -> None:
    pytest.importorskip("accelerate")
    from ssaseg.integrations.hf import SegformerWithPixelClassifier

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"pixel_values": torch.randn(3, 64, 64, generator=g), "labels": torch.randint(0, 5, (64, 64), generator=g)}

    torch.manual_seed(0)
    model = SegformerWithPixelClassifier(_segformer_config(ssaseg_classifier="ssa"))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=2, per_device_train_batch_size=2, per_device_eval_batch_size=2,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Pairs(), eval_dataset=Pairs())
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert np.isfinite(trainer.evaluate()["eval_loss"])


# ---------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize(("timm_name", "decoder", "kind"), [("resnet18", "uper", "ssa"), ("convnext_atto", "segformer", "cac")])
def test_timm_create_model(timm_name: str, decoder: str, kind: str, tmp_path) -> None:
    def build():
        torch.manual_seed(0)
        return ssaseg.create_model(f"tu-{timm_name}", num_classes=5, decoder=decoder, classifier=kind, channels=32)

    model = build()
    assert model.model_name == f"tu-{timm_name}" and isinstance(model.classifier, KINDS[kind])
    assert model.backbone.reductions == [4, 8, 16, 32]
    images, targets = _batch(5)
    _train_step(model, images, targets)
    _roundtrip(model, build(), images, tmp_path)


def test_timm_channels_last_backbone_and_errors() -> None:
    from ssaseg.integrations.timm import TimmBackbone

    swin = TimmBackbone("swin_tiny_patch4_window7_224", img_size=64, depths=(1, 1, 1, 1))
    feats = swin(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == swin.out_channels == [96, 192, 384, 768]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    with pytest.raises(KeyError, match="resnet34"):
        ssaseg.create_model("tu-resnet343", num_classes=3)
    with pytest.raises(ValueError, match="decoder"):
        ssaseg.create_model("tu-resnet18", num_classes=3, decoder="fpn")
    with pytest.raises(KeyError, match="unknown model"):
        ssaseg.create_model("resnet18", num_classes=3)


def test_timm_local_weights(tmp_path) -> None:
    """``pretrained=<file>`` and ``create_model("tu-...", backbone_weights=<file>)`` read a local timm
    checkpoint (no download)."""
    import timm
    from safetensors.torch import save_file

    from ssaseg.integrations.timm import TimmBackbone

    torch.manual_seed(1)
    classifier_net = timm.create_model("resnet18", num_classes=10)
    save_file(classifier_net.state_dict(), str(tmp_path / "resnet18.safetensors"))
    model = ssaseg.create_model("tu-resnet18", num_classes=3, backbone_weights=tmp_path / "resnet18.safetensors")
    assert torch.equal(model.backbone.body.layer4[1].conv2.weight, classifier_net.layer4[1].conv2.weight)
    direct = TimmBackbone("resnet18", pretrained=tmp_path / "resnet18.safetensors")
    assert torch.equal(direct.body.conv1.weight, classifier_net.conv1.weight)
    with pytest.raises(FileNotFoundError):
        TimmBackbone("resnet18", pretrained=tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------- --import
USER_MODULE = '''
"""A user's module: one model and one dataset registered from outside ssaseg."""
from pathlib import Path

import numpy as np
from torch import nn

from ssaseg import register_model
from ssaseg.data.datasets import DATASETS, DatasetSpec
from ssaseg.decoders.fcn import FCNDecoder
from ssaseg.layers import ConvModule
from ssaseg.segmentor import build_segmentor


class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvModule(3, 32, 3, stride=4, norm="gn", num_groups=8)
        self.out_channels = [32]

    def forward(self, x):
        return [self.stem(x)]


@register_model
def {name}(num_classes, classifier="ssa", classifier_kwargs=None, **kwargs):
    decoder = FCNDecoder(32, 32, in_index=0, num_convs=1, kernel_size=3, norm="gn")
    return build_segmentor(TinyBackbone(), decoder, num_classes, classifier, classifier_kwargs, **kwargs)


def pairs(root: Path, split: str):
    images = sorted((root / "images" / split).glob("*.jpg"))[:3]
    return [(p, root / "annotations" / split / (p.stem + ".png")) for p in images]


CLASSES = tuple(f"c{{i}}" for i in range(14))
PALETTE = tuple((i * 18, 255 - i * 18, (i * 40) % 256) for i in range(14))
DATASETS["{name}_data"] = DatasetSpec(pairs, CLASSES, PALETTE, False,
                                    {{"scale": (64, 64), "ratio_range": (1.0, 1.0), "crop_size": (64, 64)}},
                                    {{"scale": (64, 64), "resize_to_multiple": 32}})
'''

CONFIG = """\
model: {{name: {name}, classifier: cac, num_classes: 14, sync_bn: false}}
data:
  dataset: {name}_data
  root: {root}
  batch_size: 2
  num_workers: 0
schedule: {{max_iters: 2, warmup_iters: 1}}
train: {{eval_interval: 0, checkpoint_interval: 0, log_interval: 1, amp: "off"}}
"""


@pytest.fixture()
def user_module(tmp_path):
    import sys

    from ssaseg.data.datasets import DATASETS
    from ssaseg.models import _ENTRYPOINTS

    name = "user_toy_net"
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(USER_MODULE.format(name=name)))
    yield name, path
    _ENTRYPOINTS.pop(name, None)
    DATASETS.pop(f"{name}_data", None)
    sys.modules.pop("my_models", None)


def test_cli_import_registers_models_and_datasets(tmp_path, user_module, capsys) -> None:
    from ssaseg.data.demo import ensure_demo_dataset

    name, module = user_module
    root = ensure_demo_dataset(tmp_path / "cache")
    cfg = tmp_path / "user.yaml"
    cfg.write_text(CONFIG.format(name=name, root=root))
    work = tmp_path / "work"
    assert run(["--import", str(module), "train", str(cfg), "--work-dir", str(work), "--no-progress", "--device", "cpu"]) == 0
    ckpt = work / "iter_2.pth"
    assert ckpt.is_file()
    # The registration persists in this process; the flag may also follow the command.
    assert run(["test", str(cfg), str(ckpt), "--import", str(module), "--work-dir", str(work), "--no-progress", "--device", "cpu"]) == 0
    assert "mIoU" in capsys.readouterr().out
    image = next((root / "images" / "validation").glob("*.jpg"))
    assert run(["predict", str(ckpt), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert list((tmp_path / "pred").iterdir())
    args = ["benchmark", name, "--classifier", "cac", "--num-classes", "14", "--size", "64", "--no-latency", "--device", "cpu"]
    assert run(["--import", str(module), *args]) == 0
    assert name in capsys.readouterr().out


def test_cli_import_by_module_name(tmp_path, user_module, monkeypatch) -> None:
    import sys

    name, module = user_module
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    assert run(["--import", "my_models", "benchmark", name, "--num-classes", "3", "--size", "32", "--no-latency", "--device", "cpu"]) == 0


def test_cli_import_errors(capsys) -> None:
    assert run(["--import", "no_such_module_xyz", "benchmark", "segformer_b0"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err
    assert run(["--import", "missing_dir/plugin.py", "train", "x.yaml"]) == 2
    assert "file not found" in capsys.readouterr().err
    assert run(["train", "x.yaml", "--import"]) == 2


# ---------------------------------------------------------------------------------------- docs
def _doc_blocks(language: str) -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_docs_examples_run(tmp_path, monkeypatch, capsys) -> None:
    """Every Python block of docs/integrations.md runs; the user module of the --import section
    is imported by the CLI, and every YAML block is a valid config."""
    import sys

    from ssaseg.config import load_config
    from ssaseg.models import _ENTRYPOINTS

    monkeypatch.chdir(tmp_path)
    sys.modules.pop("my_models", None)
    blocks = _doc_blocks("python")
    assert len(blocks) == 4
    module = next(b for b in blocks if b.startswith("# my_models.py"))
    for block in blocks:
        if block is not module:
            exec(compile(block, "docs/integrations.md", "exec"), {"__name__": "docs_example"})
    (tmp_path / "my_models.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        args = ["benchmark", "smp_fpn_r18", "--classifier", "cac", "--num-classes", "5", "--size", "64", "--no-latency", "--device", "cpu"]
        assert run(["--import", "my_models", *args]) == 0
        assert "smp_fpn_r18" in capsys.readouterr().out
        for i, block in enumerate(_doc_blocks("yaml")):
            (tmp_path / f"doc{i}.yaml").write_text(block)
            cfg = load_config(tmp_path / f"doc{i}.yaml")
            assert cfg["model"]["classifier"] == "cac"
    finally:
        _ENTRYPOINTS.pop("smp_fpn_r18", None)
        sys.modules.pop("my_models", None)
