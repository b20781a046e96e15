"""SegNeXt (MSCAN + LightHamHead) and SegFormer (MiT + All-MLP): parameter counts, key layouts and
converters, NMF seeding, compiling with a seeded NMF, paper configs. Builds, training, eval,
deploy, compile and export of every model are in test_model_contract.py."""
from __future__ import annotations

import functools

import pytest
import torch

from ssaseg.backbones.mit import MixVisionTransformer, convert_official_mit, is_official_mit_layout
from ssaseg.backbones.mscan import MSCAN
from ssaseg.checkpoints import SSA_PARAMETER_NAMES, load_checkpoint
from ssaseg.decoders.ham import NMF2D
from ssaseg.models import count_parameters, create_model, list_models
from ssaseg.weights import load_weights

pytestmark = pytest.mark.usefixtures("single_thread")

K = 5
TINY = {
    "segnext_t": dict(embed_dims=(8, 16, 32, 32), depths=(1, 1, 1, 1), channels=32, md_r=4),
    "segformer_b0": dict(embed_dims=8, depths=(1, 1, 1, 1), channels=32),
}


def tiny(name: str, classifier: str = "ssa", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, K, classifier=classifier, **{**TINY[name], **kw})


def meta_model(name: str, classifier: str, num_classes: int = 150) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes, classifier=classifier)


@functools.cache
def counts(name: str) -> tuple[int, int, int]:
    """Real-size parameter counts at K = 150: (linear, SSA for training, SSA after deploy())."""
    ssa = meta_model(name, "ssa")
    ssa_total = count_parameters(ssa)
    return count_parameters(meta_model(name, "linear")), ssa_total, count_parameters(ssa.deploy())


def test_registered():
    names = set(list_models())
    assert {f"segnext_{s}" for s in "tsbl"} <= names
    assert {f"segformer_b{i}" for i in range(6)} <= names


# ---------------------------------------------------------------------------------------------
# parameter counts at real size (K = 150), built on the meta device


def ssa_added(c: int, k: int, deployed: bool) -> int:
    """SSA parameters on top of the linear classifier (docs/algorithm.md §2)."""
    return 4 * c * c + 12 * c + k * c if deployed else 8 * c * c + 14 * c + k * c


# exact counts with the linear classifier at K = 150 (backbone + decoder + conv_seg)
LINEAR_150 = {
    "segnext_t": (4_263_414, 256),
    "segnext_s": (13_932_886, 256),
    "segnext_b": (27_636_310, 512),
    "segnext_l": (48_926_550, 1024),
    "segformer_b0": (3_753_718, 256),
    "segformer_b5": (82_008_406, 256),
}


@pytest.mark.parametrize("name", list(LINEAR_150))
def test_parameter_counts_exact(name: str):
    linear, c = LINEAR_150[name]
    assert counts(name) == (
        linear, linear + ssa_added(c, 150, deployed=False), linear + ssa_added(c, 150, deployed=True)
    )


def test_parameter_counts_match_paper():
    # SegNeXt-T 4.3 M -> 4.6 M, SegFormer-B5 82.0 M -> 82.3 M (README, inference modules only)
    for name, base, with_ssa in (("segnext_t", 4.3, 4.6), ("segformer_b5", 82.0, 82.3)):
        linear, _, deployed = counts(name)
        assert (round(linear / 1e6, 1), round(deployed / 1e6, 1)) == (base, with_ssa)


def test_mmseg_key_names():
    nx = set(meta_model("segnext_t", "ssa").state_dict())
    for key in (
        "backbone.patch_embed1.proj.0.weight", "backbone.patch_embed1.proj.4.running_var",
        "backbone.patch_embed2.proj.weight", "backbone.patch_embed2.norm.weight",
        "backbone.block1.0.norm1.weight", "backbone.block1.0.attn.proj_1.weight",
        "backbone.block3.4.attn.spatial_gating_unit.conv0.weight",
        "backbone.block3.4.attn.spatial_gating_unit.conv2_2.weight",
        "backbone.block3.4.attn.spatial_gating_unit.conv3.bias", "backbone.block2.1.mlp.dwconv.dwconv.weight",
        "backbone.block4.1.layer_scale_2", "backbone.norm4.weight",
        "decoder.squeeze.conv.weight", "decoder.squeeze.gn.weight", "decoder.hamburger.ham_in.conv.bias",
        "decoder.hamburger.ham_out.gn.bias", "decoder.align.conv.weight", "classifier.conv_seg.weight",
    ):
        assert key in nx, key
    assert "decoder.hamburger.ham_out.conv.bias" not in nx  # conv before a norm has no bias (mmcv)
    sf = set(meta_model("segformer_b5", "ssa").state_dict())
    for key in (
        "backbone.layers.0.0.projection.weight", "backbone.layers.0.0.norm.bias",
        "backbone.layers.2.1.39.attn.attn.in_proj_weight", "backbone.layers.2.1.39.attn.attn.out_proj.bias",
        "backbone.layers.0.1.2.attn.sr.weight", "backbone.layers.0.1.2.attn.norm.weight",
        "backbone.layers.1.1.0.ffn.layers.0.weight", "backbone.layers.1.1.0.ffn.layers.1.weight",
        "backbone.layers.1.1.0.ffn.layers.4.bias", "backbone.layers.3.2.weight",
        "decoder.convs.3.conv.weight", "decoder.convs.3.bn.running_mean", "decoder.fusion_conv.conv.weight",
    ):
        assert key in sf, key
    assert "backbone.layers.3.1.0.attn.sr.weight" not in sf  # sr_ratio 1 in the last stage


# ---------------------------------------------------------------------------------------------
# NMF2D


def test_nmf_generator_seeds_bases_and_runs_fp32():
    nmf = NMF2D(16, md_r=4, random_eval=True).eval()
    x = torch.rand(2, 16, 6, 6)
    nmf.generator = torch.Generator().manual_seed(7)
    a = nmf(x)
    nmf.generator.manual_seed(7)
    assert torch.equal(nmf(x), a)
    assert not torch.allclose(nmf(x), a)  # fresh bases on every call (docs/algorithm.md Q22)
    nmf.generator = None
    torch.manual_seed(3)
    b = nmf(x)
    torch.manual_seed(3)
    assert torch.equal(nmf(x), b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = nmf(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    fixed = NMF2D(16, md_r=4, rand_init=False).eval()
    assert torch.equal(fixed(x), fixed(x)) and "bases" in fixed.state_dict()
    with pytest.raises(ValueError, match="divisible by md_s"):
        NMF2D(10, md_s=4)


def test_nmf_steps_follow_mode():
    calls: list[int] = []
    nmf = NMF2D(8, md_r=2)
    nmf._update_bases = lambda x, b, c: (calls.append(1), b)[1]  # type: ignore[method-assign]
    x = torch.rand(1, 8, 4, 4)
    nmf.train()(x)
    assert len(calls) == 6
    calls.clear()
    nmf.eval()(x)
    assert len(calls) == 7


# ---------------------------------------------------------------------------------------------
# checkpoints: published backbone layouts and official full-model checkpoints


def to_official_mit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Test-side inverse of convert_official_mit (mmseg layout -> NVlabs layout)."""
    out: dict[str, torch.Tensor] = {}
    for key, v in state.items():
        _, stage, part, rest = key.split(".", 3)
        s = int(stage) + 1
        if part == "0":
            out[f"patch_embed{s}.{rest.replace('projection.', 'proj.')}"] = v
        elif part == "2":
            out[f"norm{s}.{rest}"] = v
        else:
            block, tail = rest.split(".", 1)
            p = f"block{s}.{block}."
            if tail.startswith("attn.attn.in_proj_"):
                param = tail.rsplit("_", 1)[1]
                c = v.shape[0] // 3
                out[p + f"attn.q.{param}"], out[p + f"attn.kv.{param}"] = v[:c], v[c:]
            elif tail.startswith("attn.attn.out_proj."):
                out[p + tail.replace("attn.attn.out_proj.", "attn.proj.")] = v
            elif tail.startswith("ffn.layers."):
                idx, param = tail[len("ffn.layers."):].split(".")
                name = {"0": "fc1", "1": "dwconv.dwconv", "4": "fc2"}[idx]
                out[p + f"mlp.{name}.{param}"] = v.flatten(1) if idx in "04" and param == "weight" else v
            else:
                out[p + tail] = v
    return out


def test_official_mit_converter_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = MixVisionTransformer(8, (1, 2, 1, 1)).eval()
    official = to_official_mit(src.state_dict())
    assert is_official_mit_layout(official) and "block1.0.attn.kv.weight" in official
    assert official["block2.1.mlp.fc1.weight"].dim() == 2
    converted = convert_official_mit({**official, "head.weight": torch.zeros(3, 64), "head.bias": torch.zeros(3)})
    assert converted.keys() == src.state_dict().keys()
    for k, v in src.state_dict().items():
        assert torch.equal(converted[k], v), k
    with pytest.raises(KeyError, match="pos_embed"):
        convert_official_mit({"pos_embed": torch.zeros(1)})

    # the loader detects the layout; outputs equal the source model's
    path = tmp_path / "mit_official.pth"
    torch.save({"state_dict": official}, path)
    model = tiny("segformer_b0", "linear", depths=(1, 2, 1, 1)).eval()
    load_weights(model.backbone, path, "mit")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src(x), model.backbone(x)):
            torch.testing.assert_close(a, b)

    # mmseg layout loads as is; a wrong-size file names the file and the keys
    mm_path = tmp_path / "mit_mmseg.pth"
    torch.save(src.state_dict(), mm_path)
    load_weights(MixVisionTransformer(8, (1, 2, 1, 1)), mm_path, "mit")
    with pytest.raises(ValueError, match=r"mit_mmseg\.pth does not fit[\s\S]*missing layers\.0\.1\.1\."):
        load_weights(MixVisionTransformer(8, (2, 2, 1, 1)), mm_path, "mit")


def nvlabs_mit_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads, srs, patch_sizes=(7, 3, 3, 3)):
    """The original NVlabs MiT forward, written functionally from its state-dict layout
    (separate q and kv Linears, explicit softmax attention, Linear MLP with a depthwise conv)."""
    import torch.nn.functional as F

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)

    def lin(t, name):
        return F.linear(t, sd[name + ".weight"], sd[name + ".bias"])

    outs = []
    for s, (nh, sr, k) in enumerate(zip(heads, srs, patch_sizes), start=1):
        w = sd[f"patch_embed{s}.proj.weight"]
        x = F.conv2d(x, w, sd[f"patch_embed{s}.proj.bias"], stride=4 if s == 1 else 2, padding=k // 2)
        B, C, H, W = x.shape
        x = ln(x.flatten(2).transpose(1, 2), f"patch_embed{s}.norm")
        j = 0
        while f"block{s}.{j}.norm1.weight" in sd:
            p = f"block{s}.{j}."
            t = ln(x, p + "norm1")
            q = lin(t, p + "attn.q").reshape(B, -1, nh, C // nh).transpose(1, 2)
            kv_in = t
            if sr > 1:
                kv_in = F.conv2d(t.transpose(1, 2).reshape(B, C, H, W), sd[p + "attn.sr.weight"], sd[p + "attn.sr.bias"], stride=sr)
                kv_in = ln(kv_in.flatten(2).transpose(1, 2), p + "attn.norm")
            kv = lin(kv_in, p + "attn.kv").reshape(B, -1, 2, nh, C // nh).permute(2, 0, 3, 1, 4)
            attn = ((q @ kv[0].transpose(-2, -1)) * (C // nh) ** -0.5).softmax(-1)
            x = x + lin((attn @ kv[1]).transpose(1, 2).reshape(B, -1, C), p + "attn.proj")
            h = lin(ln(x, p + "norm2"), p + "mlp.fc1")
            h = F.conv2d(h.transpose(1, 2).reshape(B, -1, H, W), sd[p + "mlp.dwconv.dwconv.weight"],
                         sd[p + "mlp.dwconv.dwconv.bias"], padding=1, groups=h.shape[-1])
            x = x + lin(F.gelu(h.flatten(2).transpose(1, 2)), p + "mlp.fc2")
            j += 1
        x = ln(x, f"norm{s}").transpose(1, 2).reshape(B, C, H, W)
        outs.append(x)
    return outs


def test_converted_official_mit_computes_the_nvlabs_function():
    """Guards the q/kv -> in_proj packing and the head split against the original semantics."""
    torch.manual_seed(0)
    official = to_official_mit(MixVisionTransformer(8, (1, 2, 1, 1), num_heads=(1, 2, 5, 8)).state_dict())
    official = {k: v + 0.05 * torch.randn_like(v) for k, v in official.items()}  # break symmetric inits
    model = MixVisionTransformer(8, (1, 2, 1, 1), num_heads=(1, 2, 5, 8)).eval()
    model.load_state_dict(convert_official_mit(official))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, ref in zip(model(x), nvlabs_mit_forward(official, x, (1, 2, 5, 8), (8, 4, 2, 1))):
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_mscan_published_layout_loads(tmp_path):
    torch.manual_seed(0)
    src = MSCAN((8, 16, 32, 32), (1, 1, 1, 1), (8, 8, 4, 4)).eval()
    path = tmp_path / "mscan_t.pth"
    # ImageNet files carry the classifier (dropped) and may carry a "state_dict" wrapper
    torch.save({"state_dict": {**src.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}}, path)
    model = tiny("segnext_t", "linear").eval()
    load_weights(model.backbone, path, "mscan")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src(x), model.backbone(x)):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match=r"mscan_t\.pth does not fit[\s\S]*shape mismatch"):
        load_weights(tiny("segnext_t", "linear", embed_dims=(8, 16, 32, 64)).backbone, path, "mscan")


@pytest.mark.parametrize("name", ["segnext_t", "segformer_b0"])
def test_official_full_checkpoint_loads(name: str, tmp_path):
    """An official mmseg/SSA-layout segmentor checkpoint (backbone.*, decode_head.* with the SSA
    reference's names) loads with the generic converter alone."""
    src = tiny(name)
    to_official = {v: k for k, v in SSA_PARAMETER_NAMES.items()}
    official = {}
    for key, v in src.state_dict().items():
        if key.startswith("decoder."):
            key = "decode_head." + key[len("decoder."):]
        elif key.startswith("classifier."):
            first, rest = key[len("classifier."):].split(".", 1)
            key = f"decode_head.{to_official[first]}.{rest}"
        official[key] = v
    official["decode_head.ssa_loss.criterion.empty_weight"] = torch.ones(K + 1)
    path = tmp_path / "official.pth"
    torch.save({"meta": {}, "state_dict": official}, path)
    torch.manual_seed(1)
    dst = create_model(name, K, **TINY[name])
    load_checkpoint(dst, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(2)  # same NMF bases for both SegNeXt calls
        ref = src.eval()(x)
        torch.manual_seed(2)
        torch.testing.assert_close(dst.eval()(x), ref)


# ---------------------------------------------------------------------------------------------
# torch.compile with a seeded NMF


def test_compile_fullgraph_with_nmf_generator():
    """A generator set on SegNeXt's NMF must not break fullgraph capture (the aot_eager backend
    keeps the test fast). Under compile the bases come from the global RNG (the module's generator
    is ignored), pinned by seeding before each call."""
    model = tiny("segnext_t").eval().deploy()
    model.decoder.nmf.generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.manual_seed(5)
        out = compiled(x)
        model.decoder.nmf.generator = None
        torch.manual_seed(5)
        ref = model(x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------
# configs


def test_paper_configs():
    from pathlib import Path

    from ssaseg.config import load_config

    root = Path(__file__).resolve().parents[1] / "src" / "ssaseg" / "configs"
    paths = sorted((root / "segnext").glob("*.yaml")) + sorted((root / "segformer").glob("*.yaml"))
    assert len(paths) == 19  # 18 paper configs + segnext_t_512x512_160k_ade20k_cac
    for path in paths:
        cfg = load_config(path)
        model, data, stem = cfg["model"], cfg["data"], path.stem
        parts = stem.split("_")  # e.g. segnext_t_512x512_160k_ade20k_ssa
        arch, (crop, iters, dataset, classifier) = "_".join(parts[:2]), parts[2:]
        assert (model["name"], model["classifier"]) == (arch, classifier), path
        assert model["num_classes"] == {"ade20k": 150, "coco10k": 171, "pc59": 59}[dataset], path
        assert data["train_pipeline"]["crop_size"] == [int(crop[:3])] * 2 and data["batch_size"] == 4, path
        assert cfg["schedule"]["max_iters"] == int(iters[:-1]) * 1000 and cfg["schedule"]["warmup_iters"] == 1500
        assert data["repeat"] == (50 if arch.startswith("segnext") else 1), path
        assert cfg["optimizer"]["lr"] == 6e-5 and cfg["optimizer"]["weight_decay"] == 0.01
        assert cfg["optimizer"]["param_rules"] == {
            "decoder": {"lr_mult": 10.0}, "classifier": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}
        }
        # the config's architecture kwargs are accepted by the entry point
        tiny_kwargs = TINY["segnext_t" if arch.startswith("segnext") else "segformer_b0"]
        create_model(arch, model["num_classes"], classifier, **{**tiny_kwargs, **model["kwargs"]})
