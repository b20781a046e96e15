"""ssaseg vs mmsegmentation 0.30's own models (the reference's segmentors for the paper rows that
mmseg ships): every parameter and buffer perturbed with seeded noise, saved in mmseg's layout,
loaded strictly into ssaseg with ``create_model(..., checkpoint=path)``, compared on logits.

+SSA rows: the same file plus the SSA classifier's parameters under the reference's names loads
strictly into the SSA model; its decoder feature F must equal the input of mmseg's ``conv_seg``
(the SSA classifier itself is checked against the reference code in tests/test_ssa_parity.py).

The markdown table of the measured differences is printed at the end of the run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmseg_side import import_mmseg
from ssaseg import create_model
from ssaseg.checkpoints import SSA_PARAMETER_NAMES

mmseg = import_mmseg()
if mmseg is None:
    pytest.skip("mmsegmentation 0.30 is not importable (run `make test-parity`)", allow_module_level=True)

from mmcv import Config  # noqa: E402
from mmcv.cnn.utils import revert_sync_batchnorm  # noqa: E402
from mmseg.models import build_segmentor  # noqa: E402

CONFIGS = Path(mmseg.__file__).parent / ".mim" / "configs"
K = 150  # ADE20K, as the configs
TOLERANCE = 1e-4  # max |ours - mmseg| / max |mmseg|
#: square, non-square, and non-square with sides that are not multiples of 32.
SIZES = [(64, 64), (64, 96), (72, 100)]
#: ssaseg model -> mmseg 0.30 config of the same architecture (ADE20K, 512x512).
CASES = {
    "upernet_swin_t": "swin/upernet_swin_tiny_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K.py",
    "upernet_swin_b": "swin/upernet_swin_base_patch4_window7_512x512_160k_ade20k_pretrain_224x224_1K.py",
    "upernet_swin_l": "swin/upernet_swin_large_patch4_window7_512x512_pretrain_224x224_22K_160k_ade20k.py",
    "segformer_b5": "segformer/segformer_mit-b5_512x512_160k_ade20k.py",
    "ocrnet_hrnet_w48": "ocrnet/ocrnet_hr48_512x512_160k_ade20k.py",
    "fcn_r101_d8": "fcn/fcn_r101-d8_512x512_160k_ade20k.py",
}
RESULTS: list[tuple[str, str, str, float]] = []


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Seeded noise on every parameter and floating buffer (BN statistics included), so that no
    key mapping can hide behind an identity-like initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("num_batches_tracked"):
                tensor.copy_(torch.randint(1, 1000, (), generator=gen))
            elif not tensor.is_floating_point():
                continue  # index tables (Swin's relative_position_index) are structure, not weights
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=gen))


def build_mmseg(config: str) -> torch.nn.Module:
    cfg = Config.fromfile(str(CONFIGS / config))
    cfg.model.pretrained = None
    if "init_cfg" in cfg.model.backbone:
        cfg.model.backbone.init_cfg = None
    cfg.model.decode_head = _without_num_classes(cfg.model.decode_head)
    model = build_segmentor(cfg.model, train_cfg=None, test_cfg=cfg.get("test_cfg"))
    return revert_sync_batchnorm(model).eval()  # SyncBN -> BN: identical in eval mode


def _without_num_classes(head):
    heads = head if isinstance(head, list) else [head]
    for h in heads:
        h.num_classes = K
    return head


def rel_diff(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory):
    name = request.param
    torch.manual_seed(0)
    reference = build_mmseg(CASES[name])
    perturb_(reference, seed=1)
    path = tmp_path_factory.mktemp(name) / "mmseg_layout.pth"
    torch.save({"state_dict": reference.state_dict(), "meta": {}}, path)
    ours = create_model(name, K, classifier="linear", checkpoint=str(path)).eval()  # strict
    yield name, reference, ours, path
    path.unlink()


def _mmseg_logits_and_feature(reference, images):
    cascade = isinstance(reference.decode_head, torch.nn.ModuleList)
    head = reference.decode_head[-1] if cascade else reference.decode_head
    seen = []
    hook = head.conv_seg.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        logits = reference.encode_decode(images, [{}])
    finally:
        hook.remove()
    return logits, seen[-1]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_logits_equal_mmseg(pair, size) -> None:
    name, reference, ours, _ = pair
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = _mmseg_logits_and_feature(reference, images)
        logits = ours(images)
    assert logits.shape == expected.shape
    diff = rel_diff(logits, expected)
    RESULTS.append((name, "linear", f"{size[0]}×{size[1]}", diff))
    assert diff <= TOLERANCE


def test_the_comparison_sees_a_one_weight_change(pair) -> None:
    """Guards the zeros in the table: one backbone weight off by 1e-3 must show (the comparison
    is between two independently computed tensors, and the loaded weights are in use)."""
    name, reference, ours, _ = pair
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    weight = next(ours.backbone.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight.view(-1)[0] += 1e-3
        try:
            expected, _ = _mmseg_logits_and_feature(reference, images)
            assert rel_diff(ours(images), expected) > 0
        finally:
            weight.copy_(original)


def test_ssa_model_loads_the_same_file_and_its_feature_equals_mmseg(pair) -> None:
    name, reference, linear, path = pair
    ssa = create_model(name, K, classifier="ssa").eval()
    official = dict(torch.load(path, weights_only=True)["state_dict"])
    head = "decode_head.1." if ssa.is_cascade else "decode_head."
    to_official = {ours: theirs for theirs, ours in SSA_PARAMETER_NAMES.items()}
    gen = torch.Generator().manual_seed(3)
    for key, value in ssa.classifier.state_dict().items():
        first, _, rest = key.partition(".")
        noisy = value + 0.05 * torch.randn(value.shape, generator=gen) if value.is_floating_point() else value
        official[f"{head}{to_official[first]}.{rest}"] = noisy  # conv_seg is replaced, too
    ssa_path = path.with_name("mmseg_layout_ssa.pth")
    torch.save({"state_dict": official}, ssa_path)
    ssa = create_model(name, K, classifier="ssa", checkpoint=str(ssa_path)).eval()  # strict
    ssa_path.unlink()
    for size in SIZES:
        images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            _, expected = _mmseg_logits_and_feature(reference, images)
            features = ssa.backbone(images)
            prev = ssa.aux_heads[0](features) if ssa.is_cascade else None
            feature = ssa.decode(features, prev)
        diff = rel_diff(feature, expected)
        RESULTS.append((name, "ssa (F)", f"{size[0]}×{size[1]}", diff))
        assert diff <= TOLERANCE
