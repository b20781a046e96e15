"""Optimiser construction and the poly learning-rate schedule (mmcv semantics, docs/algorithm.md §10.1).

* :func:`match_param_rule` / :func:`build_param_groups`: mmcv ``paramwise_cfg.custom_keys``.
  Keys are tried longest first (ties alphabetical); the first key that is a substring of the
  full parameter name sets ``lr_mult`` / ``decay_mult`` (a missing mult is 1).
* :func:`vit_layer_id` / :func:`build_layer_decay_groups`: ViT-Adapter's
  ``LayerDecayOptimizerConstructor`` (layer-wise lr decay for the ViT-Adapter configs).
* :class:`PolyLR`: ``lr = (base - min_lr) * (1 - it / max_iters) ** power + min_lr`` per group,
  times the linear warmup factor ``1 - (1 - it / warmup_iters) * (1 - warmup_ratio)`` while
  ``it < warmup_iters``; ``it`` is the 0-based index of the iteration about to run.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = [
    "sorted_rule_keys",
    "match_param_rule",
    "build_param_groups",
    "vit_layer_id",
    "build_layer_decay_groups",
    "build_optimizer",
    "poly_lr",
    "PolyLR",
]

#: Parameter-name prefixes of the ViT embeddings (layer id 0 under layer-wise decay).
VIT_EMBEDDING_PREFIXES = (
    "backbone.patch_embed",
    "backbone.pos_embed",
    "backbone.cls_token",
    "backbone.mask_token",
    "backbone.visual_embed",
)


def sorted_rule_keys(rules: dict[str, Any]) -> list[str]:
    """Rule keys in mmcv's matching order: longest first, ties alphabetical."""
    return sorted(sorted(rules), key=len, reverse=True)


def match_param_rule(name: str, rules: dict[str, dict[str, float]]) -> tuple[str | None, float, float]:
    """The rule applied to parameter ``name``: ``(key or None, lr_mult, decay_mult)``.

    The first key (in :func:`sorted_rule_keys` order) that is a substring of ``name`` wins.
    """
    for key in sorted_rule_keys(rules):
        if key in name:
            rule = rules[key]
            return key, float(rule.get("lr_mult", 1.0)), float(rule.get("decay_mult", 1.0))
    return None, 1.0, 1.0


def build_param_groups(
    model: nn.Module, lr: float, weight_decay: float, rules: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """One optimiser group per distinct (lr_mult, decay_mult); frozen parameters are skipped.

    Each group carries ``lr``, ``initial_lr`` (the scheduler's base), ``weight_decay``,
    ``lr_mult``, ``decay_mult`` and ``param_names`` (for logging and tests).
    """
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        _, lr_mult, decay_mult = match_param_rule(name, rules)
        group = groups.get((lr_mult, decay_mult))
        if group is None:
            group = groups[(lr_mult, decay_mult)] = {
                "params": [],
                "param_names": [],
                "lr": lr * lr_mult,
                "initial_lr": lr * lr_mult,
                "weight_decay": weight_decay * decay_mult,
                "lr_mult": lr_mult,
                "decay_mult": decay_mult,
            }
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of parameter ``name`` for layer-wise lr decay over a ViT of ``num_layers`` blocks.

    ``backbone.blocks.{i}.*`` -> ``i + 1``; the embeddings (:data:`VIT_EMBEDDING_PREFIXES`) -> 0;
    everything else (adapter modules, decoder, classifier, aux heads) -> ``num_layers + 1``.
    """
    if name.startswith(VIT_EMBEDDING_PREFIXES):
        return 0
    if name.startswith("backbone.blocks."):
        index = name.split(".")[2]
        if index.isdigit():
            return int(index) + 1
    return num_layers + 1


def build_layer_decay_groups(
    model: nn.Module, lr: float, weight_decay: float, rate: float, num_layers: int
) -> list[dict[str, Any]]:
    """ViT-Adapter's LayerDecayOptimizerConstructor.

    lr scale of layer id ``l`` is ``rate ** (num_layers + 1 - l)`` (head 1, embeddings
    ``rate ** (num_layers + 1)``). 1-D parameters, biases and ``relative_position_bias_table``
    get no weight decay. (The reference also exempts names equal to ``pos_embed`` /
    ``cls_token``, which never match full ``backbone.*`` names, so they keep their decay here too.)
    """
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name.endswith(".bias") or "relative_position_bias_table" in name
        layer = vit_layer_id(name, num_layers)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        group = groups.get(key)
        if group is None:
            scale = rate ** (num_layers + 1 - layer)
            group = groups[key] = {
                "params": [],
                "param_names": [],
                "lr": lr * scale,
                "initial_lr": lr * scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mult": scale,
                "decay_mult": 0.0 if no_decay else 1.0,
                "group_name": key,
            }
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (int(k.split("_")[1]), k))]


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """AdamW or SGD from the ``optimizer`` section of a resolved config (PyTorch defaults otherwise)."""
    ocfg = cfg["optimizer"]
    lr, wd = float(ocfg["lr"]), float(ocfg["weight_decay"])
    layer_decay = ocfg.get("layer_decay")
    if layer_decay:
        if ocfg["param_rules"]:
            raise ValueError(
                "optimizer.layer_decay and optimizer.param_rules cannot be combined (the ViT-Adapter "
                "constructor ignores custom keys); set optimizer.param_rules to {}"
            )
        groups = build_layer_decay_groups(model, lr, wd, float(layer_decay["rate"]), int(layer_decay["num_layers"]))
    else:
        groups = build_param_groups(model, lr, wd, ocfg["param_rules"])
    if ocfg["type"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(ocfg["betas"]), eps=1e-8, weight_decay=wd)
    if ocfg["type"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(ocfg["momentum"]), weight_decay=wd)
    raise ValueError(f"unknown optimizer.type {ocfg['type']!r}; expected adamw or sgd")


def poly_lr(
    base_lr: float,
    it: int,
    max_iters: int,
    power: float = 1.0,
    min_lr: float = 0.0,
    warmup_iters: int = 0,
    warmup_ratio: float = 1e-6,
) -> float:
    """mmcv ``PolyLrUpdaterHook`` with linear warmup: the lr of (0-based) iteration ``it``."""
    lr = (base_lr - min_lr) * (1.0 - it / max_iters) ** power + min_lr
    if it < warmup_iters:
        lr *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - warmup_ratio)
    return lr


class PolyLR:
    """Sets every group's ``lr`` from its ``initial_lr`` with :func:`poly_lr` before each iteration.

    ``step(it)`` must be called with the index of the iteration about to run. The state is only
    the last iteration: the lrs are a pure function of it, so resuming is exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: dict) -> None:
        self.optimizer = optimizer
        self.max_iters = int(schedule["max_iters"])
        self.power = float(schedule["power"])
        self.min_lr = float(schedule["min_lr"])
        self.warmup_iters = int(schedule["warmup_iters"])
        self.warmup_ratio = float(schedule["warmup_ratio"])
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_iter = -1

    def lr_at(self, base_lr: float, it: int) -> float:
        return poly_lr(base_lr, it, self.max_iters, self.power, self.min_lr, self.warmup_iters, self.warmup_ratio)

    def step(self, it: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(group["initial_lr"], it)
        self.last_iter = it

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        if self.last_iter >= 0:
            self.step(self.last_iter)
