"""Optimiser param rules (mmcv custom_keys), ViT layer decay and the poly/warmup LR schedule."""
import pytest
import torch
from torch import nn

from ssaseg.engine.optim import (
    PolyLR,
    build_layer_decay_groups,
    build_optimizer,
    match_param_rule,
    poly_lr,
    sorted_rule_keys,
    vit_layer_id,
)


def mmcv_poly(base, it, max_iters, power, min_lr, warmup_iters, ratio):
    """mmcv PolyLrUpdaterHook + linear warmup, written from its documented formula."""
    regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr
    if it >= warmup_iters:
        return regular
    k = (1 - it / warmup_iters) * (1 - ratio)
    return regular * (1 - k)


@pytest.mark.parametrize("it", [0, 1, 749, 1499, 1500, 1501, 80000, 159999])
def test_poly_lr_matches_mmcv(it):
    args = (160000, 1.0, 0.0, 1500, 1e-6)
    assert poly_lr(6e-5, it, *args) == pytest.approx(mmcv_poly(6e-5, it, *args), rel=1e-12)
    # OCRNet: SGD power 0.9, min_lr 1e-4, no warmup
    assert poly_lr(0.01, it, 160000, 0.9, 1e-4, 0) == pytest.approx(mmcv_poly(0.01, it, 160000, 0.9, 1e-4, 0, 0))


def test_poly_values_by_hand():
    assert poly_lr(1.0, 0, 100, 1.0, 0.0, 10, 0.1) == pytest.approx(0.1)  # first iteration: base * ratio
    assert poly_lr(1.0, 5, 100, 1.0, 0.0, 10, 0.1) == pytest.approx(0.95 * (1 - 0.5 * 0.9))
    assert poly_lr(1.0, 10, 100, 1.0, 0.0, 10, 0.1) == pytest.approx(0.9)
    assert poly_lr(1.0, 50, 100, 2.0, 0.1, 0) == pytest.approx(0.9 * 0.25 + 0.1)


def test_scheduler_per_group_min_lr_and_resume():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    cfg = {
        "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
                      "param_rules": {"1.": {"lr_mult": 10.0}}, "layer_decay": None, "betas": [0.9, 0.999]},
    }
    opt = build_optimizer(model, cfg)
    sched_cfg = {"max_iters": 100, "warmup_iters": 0, "warmup_ratio": 1e-6, "power": 0.9, "min_lr": 1e-4}
    sched = PolyLR(opt, sched_cfg)
    sched.step(40)
    lrs = sched.get_last_lr()
    assert lrs == pytest.approx([mmcv_poly(0.01, 40, 100, 0.9, 1e-4, 0, 0), mmcv_poly(0.1, 40, 100, 0.9, 1e-4, 0, 0)])
    other = PolyLR(build_optimizer(model, cfg), sched_cfg)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == pytest.approx(lrs)


def test_rule_order_longest_first_then_alphabetical():
    rules = {"norm": {"decay_mult": 0.0}, "head": {"lr_mult": 10.0}, "decode_head": {"lr_mult": 5.0},
             "abcd": {"lr_mult": 2.0}, "bcde": {"lr_mult": 3.0}}
    assert sorted_rule_keys(rules) == ["decode_head", "abcd", "bcde", "head", "norm"]
    # longest match wins over a shorter one, whatever the dict order
    assert match_param_rule("decode_head.norm.weight", rules) == ("decode_head", 5.0, 1.0)
    # a name holding both 'head' and 'norm' takes 'head' (same length: alphabetical first)
    assert match_param_rule("aux_head.norm.weight", rules) == ("head", 10.0, 1.0)
    # tie in length: alphabetical first
    assert match_param_rule("xabcdex", rules) == ("abcd", 2.0, 1.0)
    assert match_param_rule("backbone.layer.norm1.weight", rules) == ("norm", 1.0, 0.0)
    assert match_param_rule("backbone.conv.weight", rules) == (None, 1.0, 1.0)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.patch_embed = nn.Linear(2, 2)
        self.backbone.blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
        self.backbone.norm = nn.LayerNorm(2)
        self.decoder = nn.Conv2d(2, 2, 1)
        self.classifier = nn.Conv2d(2, 2, 1)


def test_param_groups_lr_and_decay_mults():
    model = Toy()
    cfg = {"optimizer": {"type": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "momentum": 0.9, "weight_decay": 0.01,
                         "param_rules": {"decoder": {"lr_mult": 10.0}, "norm": {"decay_mult": 0.0}},
                         "layer_decay": None}}
    opt = build_optimizer(model, cfg)
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by_name["decoder.weight"]["lr"] == pytest.approx(1e-2)
    assert by_name["backbone.norm.weight"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.0.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["backbone.blocks.0.weight"]["weight_decay"] == pytest.approx(0.01)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_vit_layer_ids_and_layer_decay_groups():
    assert vit_layer_id("backbone.pos_embed", 24) == 0
    assert vit_layer_id("backbone.patch_embed.proj.weight", 24) == 0
    assert vit_layer_id("backbone.cls_token", 24) == 0
    assert vit_layer_id("backbone.blocks.0.attn.qkv.weight", 24) == 1
    assert vit_layer_id("backbone.blocks.23.mlp.fc2.bias", 24) == 24
    assert vit_layer_id("backbone.interactions.0.injector.gamma", 24) == 25
    assert vit_layer_id("backbone.level_embed", 24) == 25
    assert vit_layer_id("decoder.fpn_bottleneck.conv.weight", 24) == 25
    assert vit_layer_id("classifier.conv_seg.weight", 24) == 25

    groups = build_layer_decay_groups(Toy(), lr=1.0, weight_decay=0.05, rate=0.9, num_layers=3)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["backbone.patch_embed.weight"]["lr"] == pytest.approx(0.9**4)
    assert by_name["backbone.blocks.0.weight"]["lr"] == pytest.approx(0.9**3)
    assert by_name["backbone.blocks.2.weight"]["lr"] == pytest.approx(0.9)
    assert by_name["classifier.weight"]["lr"] == pytest.approx(1.0)
    assert by_name["backbone.norm.weight"]["lr"] == pytest.approx(1.0)  # "everything else": top
    assert by_name["backbone.blocks.1.bias"]["weight_decay"] == 0.0
    assert by_name["backbone.blocks.1.weight"]["weight_decay"] == 0.05
    assert by_name["backbone.norm.weight"]["weight_decay"] == 0.0  # 1-D


def test_layer_decay_and_rules_conflict():
    cfg = {"optimizer": {"type": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "momentum": 0.9, "weight_decay": 0.05,
                         "param_rules": {"norm": {"decay_mult": 0.0}}, "layer_decay": {"rate": 0.9, "num_layers": 3}}}
    with pytest.raises(ValueError, match="cannot be combined"):
        build_optimizer(Toy(), cfg)
    cfg["optimizer"]["param_rules"] = {}
    opt = build_optimizer(Toy(), cfg)
    assert isinstance(opt, torch.optim.AdamW)
