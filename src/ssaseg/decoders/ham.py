"""SegNeXt's LightHamHead (mmseg ``LightHamHead`` without its classifier), with NMF2D.

Module names follow mmseg (``squeeze``, ``hamburger.ham_in``, ``hamburger.ham_out``, ``align``), so
official ``decode_head.*`` weights map onto ``decoder.*`` unchanged.

Randomness (docs/algorithm.md §10.6, Q22): in training the NMF bases are drawn afresh on every forward, as in
the reference. At test time the reference draws them afresh too, so its predictions change from
call to call; ssaseg's default is deterministic evaluation instead:

* eval mode, ``random_eval=False`` (default): the bases are one fixed draw, the same in every
  call, process and device (uniform from a private CPU generator seeded with ``eval_seed``,
  L2-normalised, repeated over the batch). It is a non-persistent buffer: checkpoints are
  unchanged and it works under ``torch.compile`` and ONNX export;
* eval mode, ``random_eval=True``: the reference's behaviour, a fresh draw per forward;
* ``nmf.generator = torch.Generator(device).manual_seed(0)`` makes the random draws (training,
  or eval with ``random_eval``) reproducible in eager mode; the draw happens on the generator's
  device and is then moved to the input's device;
* ``rand_init=False`` fixes one set of bases for training and eval (a persistent buffer,
  mmseg's ``rand_init=False`` option).

``torch.compile`` and ``torch.onnx.export`` cannot capture a ``torch.Generator``: a compiled or
exported model draws its random bases from the global RNG (compiled) or from the runtime's own
RNG (ONNX ``RandomUniformLike``), whatever ``generator`` is set to.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ConvModule, resize_concat


class NMF2D(nn.Module):
    """Non-negative matrix factorisation of a feature map by multiplicative updates (HamNet).

    The ``C`` channels are split into ``S`` groups of ``D = C / S``; each ``(D, N)`` slice
    (``N = H*W``) is approximated by ``bases (D, R) @ coef (N, R)^T``. Bases start uniform in
    [0, 1) and L2-normalised over D; ``coef = softmax(x^T bases)`` over R (mmseg's NMF2D forces
    ``inv_t = 1``); then ``train_steps`` (training) or ``eval_steps`` (eval) alternating updates
    of coef and bases and one final coef update. Gradients flow through every step, as in
    mmseg's and the SSA reference's implementation (no HamNet one-step gradient).

    The factorisation runs in float32 with autocast disabled: the multiplicative updates divide
    by ``denominator + 1e-6``, which half precision resolves poorly (and fp16 overflows on the
    ``x^T x``-sized sums). The output is cast back to the input's dtype.

    Args:
        channels: C (needed only for ``rand_init=False``, to size the fixed bases).
        md_s: S, the number of channel groups (1 in every SegNeXt config).
        md_r: R, the rank (16 for SegNeXt-T/S/B, 64 for SegNeXt-L).
        train_steps, eval_steps: update steps in training / eval (6 / 7).
        rand_init: draw new bases every forward (True, the configs) or use fixed ones.
        eps: the denominators' additive constant (1e-6).
        random_eval: with ``rand_init``, draw new bases in eval mode too (the reference) instead
            of the fixed, seeded evaluation bases (default False: deterministic evaluation).
        eval_seed: seed of the evaluation bases.

    Attribute ``generator`` (``torch.Generator | None``, default None = global RNG) seeds the
    per-forward bases in eager mode. ``forward(x (B, C, H, W)) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        md_s: int = 1,
        md_r: int = 64,
        train_steps: int = 6,
        eval_steps: int = 7,
        rand_init: bool = True,
        eps: float = 1e-6,
        random_eval: bool = False,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        if channels % md_s:
            raise ValueError(f"NMF2D: channels ({channels}) must be divisible by md_s ({md_s})")
        self.S, self.R = md_s, md_r
        self.train_steps, self.eval_steps = train_steps, eval_steps
        self.rand_init = rand_init
        self.eps = eps
        self.random_eval = random_eval
        self.eval_seed = eval_seed
        self.generator: torch.Generator | None = None
        if not rand_init:
            self.register_buffer("bases", F.normalize(torch.rand(md_s, channels // md_s, md_r), dim=1))
        else:
            # Drawn on the CPU from a private generator: the same values on every device and in
            # every process, and the global RNG is left untouched.
            seeded = torch.Generator(device="cpu").manual_seed(eval_seed)
            eval_bases = torch.rand(md_s, channels // md_s, md_r, generator=seeded, device="cpu")
            self.register_buffer("eval_bases", F.normalize(eval_bases, dim=1), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"S={self.S}, R={self.R}, steps={self.train_steps}/{self.eval_steps}, rand_init={self.rand_init}, "
            f"random_eval={self.random_eval}"
        )

    def _draw_bases(self, batch: int, dim: int, like: Tensor) -> Tensor:
        """Bases ``(batch*S, D, R)`` in ``like``'s dtype and on its device."""
        if not self.rand_init:
            return self.bases.to(like.dtype).repeat(batch, 1, 1)
        if not self.training and not self.random_eval:
            return self.eval_bases.to(like.device, like.dtype).repeat(batch, 1, 1)
        shape = (batch * self.S, dim, self.R)
        gen = self.generator
        # A torch.Generator cannot be captured by torch.compile / torch.onnx.export: there the
        # global RNG (or the ONNX runtime's) is used instead.
        if gen is None or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            bases = torch.rand(shape, device=like.device, dtype=like.dtype)
        else:
            bases = torch.rand(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)
        return F.normalize(bases, dim=1)

    def _update_coef(self, x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        # coef <- coef * (x^T bases) / (coef (bases^T bases) + eps); shapes (BS, N, R).
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + self.eps)

    def _update_bases(self, x: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        # bases <- bases * (x coef) / (bases (coef^T coef) + eps); shapes (BS, D, R).
        numerator = torch.bmm(x, coef)
        denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
        return bases * numerator / (denominator + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        B, C, H, W = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float().reshape(B * self.S, C // self.S, H * W)
            bases = self._draw_bases(B, C // self.S, x)
            coef = F.softmax(torch.bmm(x.transpose(1, 2), bases), dim=-1)
            for _ in range(self.train_steps if self.training else self.eval_steps):
                coef = self._update_coef(x, bases, coef)
                bases = self._update_bases(x, bases, coef)
            coef = self._update_coef(x, bases, coef)
            out = torch.bmm(bases, coef.transpose(1, 2))
        return out.reshape(B, C, H, W).to(in_dtype)


class Hamburger(nn.Module):
    """``relu(x + ham_out(NMF(relu(ham_in(x)))))``; ham_in is a biased 1x1 conv, ham_out a 1x1
    conv + norm (GN32 in the configs). ``forward(x (B, C, H, W)) -> (B, C, H, W)``."""

    def __init__(self, channels: int, nmf: NMF2D, norm: str = "gn", num_groups: int = 32) -> None:
        super().__init__()
        self.ham_in = ConvModule(channels, channels, 1, norm=None, act=None)
        self.ham = nmf
        self.ham_out = ConvModule(channels, channels, 1, norm=norm, act=None, num_groups=num_groups)

    def forward(self, x: Tensor) -> Tensor:
        enjoy = F.relu(self.ham_in(x), inplace=True)
        enjoy = self.ham_out(self.ham(enjoy))
        return F.relu(x + enjoy, inplace=True)


class LightHamDecoder(nn.Module):
    """SegNeXt LightHamHead: resize-concat of the selected levels -> ``squeeze`` 1x1 ConvModule ->
    Hamburger -> ``align`` 1x1 ConvModule. Returns F, the output of ``align`` (before dropout).

    Args:
        in_channels: channels of the selected backbone levels (T: 64,160,256; S/B/L: 128,320,512).
        channels: C, the output width (T/S 256, B 512, L 1024).
        ham_channels: width inside the Hamburger (= channels in every SegNeXt config).
        in_index: backbone levels to read (1, 2, 3: strides 8, 16, 32); all are resized to the
            first one's size, so F is at stride 8.
        md_s, md_r, train_steps, eval_steps, rand_init, random_eval: :class:`NMF2D` settings.
        norm: norm of the ConvModules ("gn", 32 groups, in the configs).
        align_corners: flag of the bilinear resizes.

    ``forward(features: list[(B, C_i, H_i, W_i)]) -> F (B, channels, H_j, W_j)`` with
    ``j = in_index[0]``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int = 256,
        ham_channels: int = 256,
        in_index: Sequence[int] = (1, 2, 3),
        md_s: int = 1,
        md_r: int = 64,
        train_steps: int = 6,
        eval_steps: int = 7,
        rand_init: bool = True,
        norm: str = "gn",
        num_groups: int = 32,
        align_corners: bool = False,
        random_eval: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_index):
            raise ValueError(f"in_channels {list(in_channels)} and in_index {list(in_index)} differ in length")
        self.in_index = list(in_index)
        self.channels = channels
        self.align_corners = align_corners
        self.squeeze = ConvModule(sum(in_channels), ham_channels, 1, norm=norm, num_groups=num_groups)
        nmf = NMF2D(ham_channels, md_s, md_r, train_steps, eval_steps, rand_init, random_eval=random_eval)
        self.hamburger = Hamburger(ham_channels, nmf, norm, num_groups)
        self.align = ConvModule(ham_channels, channels, 1, norm=norm, num_groups=num_groups)

    @property
    def nmf(self) -> NMF2D:
        """The NMF module (``decoder.nmf.generator`` seeds its random bases; ``decoder.nmf.random_eval``
        switches evaluation to the reference's random bases)."""
        return self.hamburger.ham

    def forward(self, features: list[Tensor]) -> Tensor:
        x = resize_concat([features[i] for i in self.in_index], self.align_corners)
        return self.align(self.hamburger(self.squeeze(x)))
