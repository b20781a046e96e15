"""Iteration-based training and evaluation (mmseg 0.30 ``IterBasedRunner`` semantics).

``train(cfg)`` runs ``schedule.max_iters`` iterations. Before iteration ``it`` (0-based) the
poly/warmup lr of ``it`` is set; every ``log_interval`` iterations the mean loss terms of the
interval go to the progress bar, ``log.jsonl`` and TensorBoard; every ``eval_interval`` the model
is evaluated; every ``checkpoint_interval`` and at the end ``iter_<n>.pth`` is written
atomically with everything needed to continue the same run (``--resume``).

Under torchrun (``WORLD_SIZE > 1``) the model is wrapped in DDP (SyncBatchNorm when
``model.sync_bn``), each rank draws its own shard of every epoch, evaluation confusion matrices
are summed over ranks, and only rank 0 logs and writes files.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from ..config import save_config
from .build import autocast, build_datasets, build_model, class_meta, resolve_amp
from .inference import predict_labels
from .loader import build_train_loader, shard_indices
from .logger import RunLogger, format_metrics_table, json_safe
from .metrics import ConfusionMatrix
from .optim import PolyLR, build_optimizer
from .state import (
    DistInfo,
    atomic_torch_save,
    capture_rng_state,
    init_distributed,
    latest_checkpoint,
    load_training_checkpoint,
    restore_rng_state,
    seed_everything,
)

__all__ = ["TrainResult", "train", "evaluate", "test", "unwrap"]


@dataclass
class TrainResult:
    work_dir: Path
    checkpoint: Path | None
    metrics: dict[str, Any] | None
    train_time: float  # seconds spent in training iterations (evaluation excluded)
    iterations: int  # iterations run by this call (resumed runs count only their own)
    history: list[dict[str, Any]] = field(default_factory=list)  # the train log records

    @property
    def its_per_sec(self) -> float:
        return self.iterations / self.train_time if self.train_time > 0 else math.nan


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _collate_train(batch: list[dict]) -> dict:
    from ..data import collate_train

    return collate_train(batch)


def _eval_kwargs(cfg: dict) -> dict[str, Any]:
    ecfg = cfg["evaluation"]
    return {
        "mode": ecfg["mode"],
        "crop": tuple(ecfg["crop_size"]),
        "stride": tuple(ecfg["stride"]),
        "scales": tuple(ecfg["scales"]),
        "flip": bool(ecfg["flip"]),
        "resize_to_multiple": cfg["data"]["test_pipeline"]["resize_to_multiple"],
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Any,
    cfg: dict,
    dist_info: DistInfo | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """mmseg metrics of ``model`` on ``dataset`` (batch 1, items at their own sizes).

    Each rank evaluates ``shard_indices`` of the dataset; confusion matrices are all-reduced.
    """
    from tqdm import tqdm

    dist_info = dist_info or DistInfo()
    device = dist_info.device
    model = unwrap(model)
    was_training = model.training
    model.eval()
    num_classes = cfg["model"]["num_classes"]
    confusion = ConfusionMatrix(num_classes, device=device)
    shard = Subset(dataset, shard_indices(len(dataset), dist_info.rank, dist_info.world_size))
    loader = DataLoader(shard, batch_size=None, shuffle=False, num_workers=cfg["data"]["num_workers"])
    kwargs = _eval_kwargs(cfg)
    bar = tqdm(loader, desc="eval", leave=False, disable=not (progress and dist_info.is_main), dynamic_ncols=True)
    for item in bar:
        image = item["image"].to(device, non_blocking=True)[None]
        label = item["label"].to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            pred = predict_labels(model, image, label.shape[-2:], **kwargs)[0]
        confusion.update(pred, label)
    confusion.all_reduce()
    model.train(was_training)
    return confusion.compute(list(getattr(dataset, "classes", None) or range(num_classes)))


def _to_scalar_dict(names: list[str], sums: torch.Tensor, count: int) -> dict[str, float]:
    return dict(zip(names, (sums / count).tolist()))


def train(
    cfg: dict,
    resume: str | None = None,
    train_dataset: Any = None,
    val_dataset: Any = None,
    progress: bool = True,
    tensorboard: bool = True,
    device: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the model of the resolved config ``cfg`` (see the module docstring).

    Args:
        resume: a checkpoint path, or ``"auto"`` for the latest ``iter_*.pth`` in the work dir.
        train_dataset / val_dataset: datasets to use instead of building them from ``cfg["data"]``.
        progress: show tqdm bars (rank 0).
        tensorboard: write TensorBoard scalars next to the JSONL log.
        device: force "cpu" or "cuda" (default: CUDA when available).
        stop_after: leave the run after this many iterations (with a checkpoint), as an
            interrupted job would; ``--resume`` continues it. The schedule is unchanged.
    """
    dist_info = init_distributed(device)
    dev = dist_info.device
    tcfg, scfg = cfg["train"], cfg["schedule"]
    work_dir = Path(tcfg["work_dir"])
    max_iters = int(scfg["max_iters"])
    end = max_iters if stop_after is None else min(int(stop_after), max_iters)

    ckpt = None
    if resume:
        path = latest_checkpoint(work_dir) if resume == "auto" else Path(resume)
        if path is None:
            if dist_info.is_main:
                print(f"--resume auto: no checkpoint in {work_dir}; starting from iteration 0")
        else:
            ckpt = load_training_checkpoint(path)
            for key in ("optimizer", "scheduler", "iteration", "rng", "sampler"):
                if key not in ckpt:
                    raise ValueError(f"{path} holds no training state ({key!r} missing); it cannot be resumed")

    seed_everything(int(tcfg["seed"]))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if train_dataset is None or val_dataset is None:
        built_train, built_val = build_datasets(cfg, train=train_dataset is None, val=val_dataset is None)
        train_dataset = train_dataset if train_dataset is not None else built_train
        val_dataset = val_dataset if val_dataset is not None else built_val

    model = build_model(cfg)
    if dist_info.distributed and cfg["model"]["sync_bn"]:
        if dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif dist_info.is_main:
            print("model.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU")
    model.to(dev)
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = PolyLR(optimizer, scfg)
    amp_dtype = resolve_amp(tcfg["amp"], dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint {resume} does not fit model {cfg['model']['name']}: {err}") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt and ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        start = int(ckpt["iteration"])
        restore_rng_state(ckpt["rng"])

    ddp_model: nn.Module = model
    if dist_info.distributed:
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[dist_info.local_rank] if dev.type == "cuda" else None,
            find_unused_parameters=bool(tcfg["find_unused_parameters"]),
        )

    dcfg = cfg["data"]
    loader, sampler = build_train_loader(
        train_dataset,
        dcfg["batch_size"],
        _collate_train,
        dcfg["num_workers"],
        int(tcfg["seed"]),
        dist_info.rank,
        dist_info.world_size,
        start,
        pin_memory=dev.type == "cuda",
    )
    if ckpt is not None and sampler.position(start) != ckpt["sampler"]:
        raise ValueError(
            f"checkpoint {resume}: sampler position {ckpt['sampler']} does not match iteration {start} with "
            f"batch size {dcfg['batch_size']} on {dist_info.world_size} process(es); resume with the same "
            "data.batch_size, dataset and number of processes"
        )

    meta = class_meta(train_dataset, cfg["model"]["num_classes"])
    logger = RunLogger(work_dir, enabled=dist_info.is_main, tensorboard=tensorboard)
    if dist_info.is_main:
        save_config(cfg, work_dir / "config.yaml")

    def save(iteration: int) -> Path:
        path = work_dir / f"iter_{iteration}.pth"
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "iteration": iteration,
            "rng": capture_rng_state(),
            "sampler": sampler.position(iteration),
            "config": cfg,
            "meta": meta,
        }
        if dist_info.is_main:
            atomic_torch_save(state, path)
            keep = int(tcfg["max_keep_checkpoints"])
            if keep > 0:
                old = sorted(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
                for stale in old[:-keep]:
                    stale.unlink()
        return path

    from tqdm import tqdm

    bar = tqdm(
        total=max_iters, initial=start, desc="train", disable=not (progress and dist_info.is_main), dynamic_ncols=True
    )
    log_interval = max(int(tcfg["log_interval"]), 1)
    eval_interval, ckpt_interval = int(tcfg["eval_interval"]), int(tcfg["checkpoint_interval"])
    history: list[dict[str, Any]] = []
    metrics: dict[str, Any] | None = None
    last_ckpt: Path | None = None
    loss_names: list[str] | None = None
    loss_sums: torch.Tensor | None = None
    in_interval = 0
    train_time, tick = 0.0, time.perf_counter()
    data_iter = iter(loader)
    try:
        for it in range(start, end):
            scheduler.step(it)
            batch = next(data_iter)
            images = batch["images"].to(dev, non_blocking=True)
            labels = batch["labels"].to(dev, non_blocking=True)
            with autocast(dev, amp_dtype):
                losses = ddp_model(images, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()

            # Accumulate the loss terms on the device; one host transfer per log step.
            if loss_names is None:
                loss_names = ["loss"] + sorted(k for k in losses if k != "loss")
            terms = torch.stack([losses[k].detach().float() for k in loss_names])
            loss_sums = terms if loss_sums is None else loss_sums + terms
            in_interval += 1
            done = it + 1
            bar.update(1)
            if done % log_interval == 0 or done == end:
                train_time += time.perf_counter() - tick
                if dist_info.distributed:
                    # Log the global-batch mean, comparable with a one-process run.
                    torch.distributed.all_reduce(loss_sums)
                    loss_sums /= dist_info.world_size
                means = _to_scalar_dict(loss_names, loss_sums, in_interval)
                if not math.isfinite(means["loss"]):
                    raise FloatingPointError(
                        f"training diverged: loss is {means['loss']} at iteration {done} ({work_dir}); "
                        "lower optimizer.lr or set train.amp=off"
                    )
                lr = optimizer.param_groups[0]["lr"]
                record = {"type": "train", "iter": done, "lr": lr, **means, "time": train_time}
                history.append(record)
                logger.log(record, {f"train/{k}": v for k, v in {**means, "lr": lr}.items()}, done)
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()} | {"lr": f"{lr:.2e}"}, refresh=False)
                loss_sums, in_interval = None, 0
                tick = time.perf_counter()
            if val_dataset is not None and eval_interval > 0 and (done % eval_interval == 0 or done == max_iters):
                train_time += time.perf_counter() - tick
                metrics = evaluate(ddp_model, val_dataset, cfg, dist_info, amp_dtype, progress)
                logger.log(
                    {"type": "eval", "iter": done, **metrics},
                    {f"val/{k}": metrics[k] for k in ("aAcc", "mIoU", "mAcc")},
                    done,
                )
                if dist_info.is_main:
                    bar.write(f"iter {done}: " + format_metrics_table(metrics, per_class=False))
                tick = time.perf_counter()
            if (ckpt_interval > 0 and done % ckpt_interval == 0) or done == end:
                train_time += time.perf_counter() - tick
                last_ckpt = save(done)
                tick = time.perf_counter()
    finally:
        bar.close()
        logger.close()
    return TrainResult(work_dir, last_ckpt, metrics, train_time, max(end - start, 0), history)


def test(
    cfg: dict,
    checkpoint: str,
    aug_test: bool = False,
    dataset: Any = None,
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (an ssaseg or official checkpoint) on the config's val split.

    ``aug_test`` sets mmseg's ``--aug-test`` ratios [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and flip.
    Rank 0 writes ``eval_{single,multi}_scale_<time>.json`` to the work dir.
    """
    import json

    from ..checkpoints import load_checkpoint

    dist_info = init_distributed(device)
    if aug_test:
        cfg = {**cfg, "evaluation": {**cfg["evaluation"], "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}}
    if dataset is None:
        _, dataset = build_datasets(cfg, train=False, val=True)
    from ..hub import is_pretrained_source, load_for_config

    if is_pretrained_source(checkpoint):  # a save_pretrained directory or a Hub ID
        model = load_for_config(cfg, checkpoint)
    else:
        model = build_model({**cfg, "model": {**cfg["model"], "checkpoint": None, "backbone_weights": None}})
        load_checkpoint(model, checkpoint)
    model.deploy()
    model.to(dist_info.device)
    metrics = evaluate(model, dataset, cfg, dist_info, resolve_amp(cfg["train"]["amp"], dist_info.device), progress)
    if dist_info.is_main:
        work_dir = Path(cfg["train"]["work_dir"])
        work_dir.mkdir(parents=True, exist_ok=True)
        kind = "multi" if aug_test else "single"
        out = work_dir / f"eval_{kind}_scale_{time.strftime('%Y%m%d_%H%M%S')}.json"
        out.write_text(json.dumps(json_safe({"checkpoint": str(checkpoint), **metrics}), indent=2))
    return metrics

