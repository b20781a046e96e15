"""Iteration-based training and evaluation (mmseg 0.30 ``IterBasedRunner`` semantics).

``train(cfg)`` runs ``schedule.max_iters`` iterations. Before iteration ``it`` (0-based) the
poly/warmup lr of ``it`` is set; every ``log_interval`` iterations the mean loss terms of the
interval go to the progress bar, ``log.jsonl`` and TensorBoard; every ``eval_interval`` the model
is evaluated; every ``checkpoint_interval`` and at the end ``iter_<n>.pth`` is written
atomically with everything needed to continue the same run (``--resume``).

Safety (each piece in its own module): the run holds the work dir's lock and refuses a directory
holding another run's checkpoints (``workdir.py``); a resumed run must be the same run
(``resume.py``); a NaN/inf loss stops the run naming the iteration, and a checkpoint is written
only after its tensors are verified finite, then ``latest.pth`` is re-pointed and old ones are
pruned (``nonfinite.py``, :meth:`_Run.save`).

Under torchrun (``WORLD_SIZE > 1``) the model is wrapped in DDP (SyncBatchNorm when
``model.sync_bn``), each rank draws its own shard of every epoch, evaluation confusion matrices
are summed over ranks, and only rank 0 logs and writes files.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from ..checkpoints import load_state_dict_checked
from ..config import dump_config
from ..data.meta import class_meta
from .build import autocast, build_datasets, build_model, resolve_amp
from .inference import predict_labels
from .loader import build_train_loader, shard_indices
from .logger import RunLogger, format_metrics_table, json_safe
from .metrics import ConfusionMatrix
from .nonfinite import NonFiniteError, NonFiniteGuard
from .optim import PolyLR, build_optimizer
from .resume import ResumeError, check_same_run, find_resume_checkpoint
from .state import (
    DistInfo,
    atomic_torch_save,
    capture_rng_state,
    check_finite_weights,
    init_distributed,
    nonfinite_tensors,
    restore_rng_state,
    seed_everything,
)
from .workdir import WorkDir

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


class _Run:
    """One training run's state: model, optimiser, schedule, data stream, logger and files.

    The trainer's pieces are its methods: :meth:`restore` (continue a checkpoint),
    :meth:`step` (one iteration), :meth:`log_interval_end`, :meth:`evaluate`, :meth:`save`.
    """

    def __init__(self, cfg: dict, dist_info: DistInfo, work: WorkDir, train_dataset: Any, progress: bool,
                 tensorboard: bool) -> None:
        self.cfg, self.dist, self.work = cfg, dist_info, work
        self.tcfg = cfg["train"]
        self.progress = progress
        dev = dist_info.device
        model = build_model(cfg)
        if dist_info.distributed and cfg["model"]["sync_bn"]:
            if dev.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            elif dist_info.is_main:
                print("model.sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on CPU")
        self.model = model.to(dev).train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = PolyLR(self.optimizer, cfg["schedule"])
        self.amp_dtype = resolve_amp(self.tcfg["amp"], dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.skip_nonfinite = self.tcfg["nonfinite"] == "skip"
        self.skipped_steps = 0
        self.meta = class_meta(train_dataset, cfg["model"]["num_classes"])
        self.train_dataset = train_dataset
        self.loader = self.sampler = None
        self.start = 0  # set by restore()
        self.guard: NonFiniteGuard | None = None
        self.logger = RunLogger(work.path, enabled=dist_info.is_main, tensorboard=tensorboard)

    # -- restore -------------------------------------------------------------------------------
    def restore(self, ckpt: dict, path: Path) -> None:
        """Load model, optimiser, schedule, scaler and RNG state of ``ckpt`` (checked by ``check_same_run``)."""
        load_state_dict_checked(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start = int(ckpt["iteration"])
        restore_rng_state(ckpt["rng"])

    def start_stream(self, ckpt: dict | None, path: Path | None) -> None:
        """The DDP wrapper and the data stream positioned at ``self.start``."""
        dev, tcfg, dcfg = self.dist.device, self.tcfg, self.cfg["data"]
        self.ddp_model: nn.Module = self.model
        if self.dist.distributed:
            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.dist.local_rank] if dev.type == "cuda" else None,
                find_unused_parameters=bool(tcfg["find_unused_parameters"]),
            )
        self.loader, self.sampler = build_train_loader(
            self.train_dataset, dcfg["batch_size"], _collate_train, dcfg["num_workers"], int(tcfg["seed"]),
            self.dist.rank, self.dist.world_size, self.start, pin_memory=dev.type == "cuda",
        )
        if ckpt is not None and self.sampler.position(self.start) != ckpt["sampler"]:
            raise ResumeError(
                f"checkpoint {path}: sampler position {ckpt['sampler']} does not match iteration {self.start} with "
                f"batch size {dcfg['batch_size']} on {self.dist.world_size} process(es): the training set has "
                "changed size; resume with the same data"
            )

    # -- one iteration -------------------------------------------------------------------------
    def step(self, it: int, batch: dict) -> tuple[list[str], torch.Tensor] | None:
        """Iteration ``it`` (0-based): forward, backward, update. Returns the loss-term names and
        their values on the device, or None when ``nonfinite=skip`` skipped the update."""
        dev = self.dist.device
        self.scheduler.step(it)
        images = batch["images"].to(dev, non_blocking=True)
        labels = batch["labels"].to(dev, non_blocking=True)
        with autocast(dev, self.amp_dtype):
            losses = self.ddp_model(images, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if self.skip_nonfinite and not NonFiniteGuard.step_is_finite(losses["loss"], self.dist.distributed):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            if self.dist.is_main:
                terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in sorted(losses.items()))
                print(f"iteration {it + 1}: non-finite loss ({terms}); update skipped (train.nonfinite=skip)",
                      file=sys.stderr)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        names = ["loss"] + sorted(k for k in losses if k != "loss")
        terms = torch.stack([losses[k].detach().float() for k in names])
        if self.guard is None:
            self.guard = NonFiniteGuard(names, dev, f"work dir {self.work.path}")
        self.guard.observe(it + 1, terms, self.optimizer.param_groups[0]["lr"])
        return names, terms

    def check_finite(self) -> None:
        """Stop here if a non-finite loss was recorded since the last check (host sync)."""
        if self.guard is not None:
            self.guard.check(distributed=self.dist.distributed)

    # -- logging -------------------------------------------------------------------------------
    def log_interval_end(self, done: int, names: list[str], sums: torch.Tensor, count: int,
                         train_time: float) -> dict[str, Any]:
        """Mean loss terms of the interval to the log (one host transfer, which also carries the
        non-finite guard's record)."""
        if self.dist.distributed:
            self.check_finite()  # a collective: every rank stops together
            # Log the global-batch mean, comparable with a one-process run.
            torch.distributed.all_reduce(sums)
            sums = sums / self.dist.world_size
            host = sums.tolist()
        else:
            packed = torch.cat([sums, self.guard.packed()]).tolist()
            host = packed[: len(names)]
            self.guard.check(packed[len(names):])
        means = {n: v / count for n, v in zip(names, host)}
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"type": "train", "iter": done, "lr": lr, **means, "time": train_time}
        if self.skipped_steps:
            record["skipped_steps"] = self.skipped_steps
        self.logger.log(record, {f"train/{k}": v for k, v in {**means, "lr": lr}.items()}, done)
        return record

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, done: int, val_dataset: Any, bar: Any) -> dict[str, Any]:
        self.check_finite()
        metrics = evaluate(self.ddp_model, val_dataset, self.cfg, self.dist, self.amp_dtype, self.progress)
        self.logger.log(
            {"type": "eval", "iter": done, **metrics},
            {f"val/{k}": metrics[k] for k in ("aAcc", "mIoU", "mAcc")},
            done,
        )
        if self.dist.is_main:
            bar.write(f"iter {done}: " + format_metrics_table(metrics, per_class=False))
        return metrics

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, done: int) -> Path:
        """Write ``iter_<done>.pth`` once its losses and tensors are verified finite, then publish
        it (``latest.pth``, pruning). Every rank verifies, so that all stop together."""
        self.check_finite()
        path = self.work.path / f"iter_{done}.pth"
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "iteration": done,
            "rng": capture_rng_state(),
            "sampler": self.sampler.position(done),
            "config": self.cfg,
            "meta": self.meta,
            "world_size": self.dist.world_size,
        }
        bad = nonfinite_tensors({"model": state["model"], "optimizer": state["optimizer"]["state"]})
        if bad:
            raise NonFiniteError(
                f"training diverged by iteration {done} (work dir {self.work.path}): the losses were finite but "
                f"{len(bad)} tensors are not ({', '.join(bad[:5])}); {path.name} was not written and the "
                "previous checkpoints are kept. Lower optimizer.lr or use train.amp=off"
            )
        if self.dist.is_main:
            atomic_torch_save(state, path)
            self.work.publish(path, int(self.tcfg["max_keep_checkpoints"]))
        return path

    def close(self) -> None:
        self.logger.close()


def _restore_point(cfg: dict, work: WorkDir, resume: str | None, dist_info: DistInfo,
                   fresh_start: bool) -> tuple[dict | None, Path | None]:
    """The checkpoint this run continues (checked to be the same run), or ``(None, None)``."""
    found = find_resume_checkpoint(work, resume, verbose=dist_info.is_main) if resume else None
    if found is None:
        if resume and dist_info.is_main:
            print(f"--resume auto: no checkpoint in {work.path}; starting from iteration 0")
        if fresh_start:
            work.discard_checkpoints()
        else:
            work.ensure_fresh()
        return None, None
    ckpt, path = found
    check_same_run(ckpt, path, cfg, dist_info.world_size)
    return ckpt, path


def train(
    cfg: dict,
    resume: str | None = None,
    train_dataset: Any = None,
    val_dataset: Any = None,
    progress: bool = True,
    tensorboard: bool = True,
    device: str | None = None,
    stop_after: int | None = None,
    fresh_start: bool = False,
) -> TrainResult:
    """Train the model of the resolved config ``cfg`` (see the module docstring).

    Args:
        resume: a checkpoint path, or ``"auto"`` for the newest readable ``iter_*.pth`` in the work
            dir. The checkpoint must come from the same run (``engine/resume.py``).
        train_dataset / val_dataset: datasets to use instead of building them from ``cfg["data"]``.
        progress: show tqdm bars (rank 0).
        tensorboard: write TensorBoard scalars next to the JSONL log.
        device: force "cpu" or "cuda" (default: CUDA when available).
        stop_after: leave the run after this many iterations (with a checkpoint), as an
            interrupted job would; ``--resume`` continues it. The schedule is unchanged.
        fresh_start: delete the checkpoints of a previous run in the work dir instead of refusing
            to start there (the demo re-runs into its own directories).
    Raises:
        WorkDirError: the work dir is locked by another run, or holds another run's checkpoints.
        ResumeError: the checkpoint cannot continue this run (lists each differing key).
        NonFiniteError: the loss or the weights became NaN/inf (``train.nonfinite=stop``).
    """
    from ..fileio import atomic_write

    dist_info = init_distributed(device)
    work = WorkDir(cfg["train"]["work_dir"], owner=dist_info.is_main)
    with work.locked():
        work.remove_temp_files()
        ckpt, ckpt_path = _restore_point(cfg, work, resume, dist_info, fresh_start)
        seed_everything(int(cfg["train"]["seed"]))
        if dist_info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if train_dataset is None or val_dataset is None:
            built_train, built_val = build_datasets(cfg, train=train_dataset is None, val=val_dataset is None)
            train_dataset = train_dataset if train_dataset is not None else built_train
            val_dataset = val_dataset if val_dataset is not None else built_val
        run = _Run(cfg, dist_info, work, train_dataset, progress, tensorboard)
        try:
            if ckpt is not None:
                run.restore(ckpt, ckpt_path)
            run.start_stream(ckpt, ckpt_path)
            del ckpt
            if dist_info.is_main:
                work.trim_log(run.start)
                atomic_write(work.path / "config.yaml", lambda fh: fh.write(dump_config(cfg).encode()))
            return _loop(run, val_dataset, stop_after)
        finally:
            run.close()


def _loop(run: _Run, val_dataset: Any, stop_after: int | None) -> TrainResult:
    from tqdm import tqdm

    tcfg = run.tcfg
    max_iters = int(run.cfg["schedule"]["max_iters"])
    start = run.start
    end = max_iters if stop_after is None else min(int(stop_after), max_iters)
    log_interval = max(int(tcfg["log_interval"]), 1)
    eval_interval, ckpt_interval = int(tcfg["eval_interval"]), int(tcfg["checkpoint_interval"])
    bar = tqdm(total=max_iters, initial=start, desc="train", disable=not (run.progress and run.dist.is_main),
               dynamic_ncols=True)
    history: list[dict[str, Any]] = []
    metrics: dict[str, Any] | None = None
    last_ckpt: Path | None = None
    names: list[str] | None = None
    sums: torch.Tensor | None = None
    in_interval = 0
    train_time, tick = 0.0, time.perf_counter()
    data_iter = iter(run.loader)
    try:
        for it in range(start, end):
            out = run.step(it, next(data_iter))
            if out is not None:  # loss terms accumulate on the device; one host transfer per log step
                names, terms = out
                sums = terms if sums is None else sums + terms
                in_interval += 1
            done = it + 1
            bar.update(1)
            if (done % log_interval == 0 or done == end) and sums is not None:
                train_time += time.perf_counter() - tick
                record = run.log_interval_end(done, names, sums, in_interval, train_time)
                history.append(record)
                bar.set_postfix({k: f"{record[k]:.4f}" for k in names} | {"lr": f"{record['lr']:.2e}"},
                                refresh=False)
                sums, in_interval = None, 0
                tick = time.perf_counter()
            if val_dataset is not None and eval_interval > 0 and (done % eval_interval == 0 or done == max_iters):
                train_time += time.perf_counter() - tick
                metrics = run.evaluate(done, val_dataset, bar)
                tick = time.perf_counter()
            if (ckpt_interval > 0 and done % ckpt_interval == 0) or done == end:
                train_time += time.perf_counter() - tick
                last_ckpt = run.save(done)
                tick = time.perf_counter()
    finally:
        bar.close()
    return TrainResult(run.work.path, last_ckpt, metrics, train_time, max(end - start, 0), history)


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
    from ..fileio import atomic_write

    dist_info = init_distributed(device)
    if aug_test:
        cfg = {**cfg, "evaluation": {**cfg["evaluation"], "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True}}
    if dataset is None:
        _, dataset = build_datasets(cfg, train=False, val=True)
    from ..hub import is_pretrained_source, load_for_config

    if is_pretrained_source(checkpoint):  # a save_pretrained directory or a Hub ID
        model = load_for_config(cfg, checkpoint)
    else:
        model = build_model(cfg, load_weights=False)
        load_checkpoint(model, checkpoint)
    check_finite_weights(model.state_dict(), checkpoint)
    model.deploy()
    model.to(dist_info.device)
    metrics = evaluate(model, dataset, cfg, dist_info, resolve_amp(cfg["train"]["amp"], dist_info.device), progress)
    if dist_info.is_main:
        kind = "multi" if aug_test else "single"
        out = Path(cfg["train"]["work_dir"]) / f"eval_{kind}_scale_{time.strftime('%Y%m%d_%H%M%S')}.json"
        text = json.dumps(json_safe({"checkpoint": str(checkpoint), **metrics}), indent=2).encode()
        atomic_write(out, lambda fh: fh.write(text))
    return metrics

