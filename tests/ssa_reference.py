"""A deliberately plain reference of the SSA classifier's training step (docs/algorithm.md §2-§6, §14, §16).

This module is a test oracle and a readable description of the algorithm. It is written
straight from docs/algorithm.md, not from ``ssaseg.classifiers.ssa``: it only reads
the parameters of an ``SSAClassifier`` (by their ssaseg names) and recomputes everything with
explicit loops over images and classes, in whatever dtype the inputs have (use float64 for
tight comparisons). Nothing here is fast, and nothing here should be imported by the package.

Name map (ssaseg name = spec name):

* ``conv_seg``                 = ``conv_seg``              fixed prototypes ``S`` (K, C) and bias
* ``position_encoder``         = ``get_feat_pos``          depthwise 3x3 conv -> ``P_f``
* ``class_position``           = ``center_pos``            embedding ``E`` (K, C)
* ``semantic_proj``            = ``center_content_proj``   phi_s
* ``spatial_proj``             = ``center_pos_proj``       phi_p
* ``center_proj``              = ``center_proj``           Lin_c
* ``teacher_semantic_proj``    = ``gt_center_content_proj``  phi^_s
* ``teacher_spatial_proj``     = ``gt_center_pos_proj``      phi^_p
* ``teacher_center_proj``      = ``gt_center_proj``          Lin^_c

The boundary mask of the response distillation uses OpenCV (``cv2.Canny``), exactly as the
official code does, so it doubles as the oracle for ``ssaseg.classifiers.boundary``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_LOSS_WEIGHTS = {
    "ce": 1.0,
    "ce_coarse": 1.0,
    "ce_teacher": 1.0,
    "kd_response": 1.0,
    "dice": 1.0,
    "dice_teacher": 1.0,
    "kd_semantic": 10.0,
    "kd_spatial": 0.4,
}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def l2_normalize(v: Tensor, dim: int, eps: float) -> Tensor:
    """``v / (||v|| + eps)``: eps is added to the norm, never used as a clamp (docs/algorithm.md §0)."""
    return v / (v.norm(dim=dim, keepdim=True) + eps)


def two_layer_mlp(seq: nn.Module, x: Tensor) -> Tensor:
    """phi(x) = Linear(2C -> C/2, no bias) -> ReLU -> Linear(C/2 -> C, bias), from the weights.

    Reads ``seq[0].weight``, ``seq[2].weight`` and ``seq[2].bias``; asserts that the first
    layer has no bias, as in the parameter table of docs/algorithm.md §2.
    """
    first, last = seq[0], seq[2]
    assert first.bias is None, "the first layer of the projection MLP must have no bias"
    hidden = torch.relu(x @ first.weight.T)
    return hidden @ last.weight.T + last.bias


def cosine_logits(x: Tensor, z: Tensor, tau: float, eps: float) -> Tensor:
    """``tau * cos``: x (C, N) pixel embeddings, z (K, C) class centers -> (K, N)."""
    return tau * (l2_normalize(z, 1, eps) @ l2_normalize(x, 0, eps))


def legacy_nearest_downsample(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Label (B, H, W) -> (B, h, w) with PyTorch's legacy ``nearest`` (src = floor(dst*in/out))."""
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def upsample_for_loss(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, align_corners=True: what the training losses use (docs/algorithm.md §5 step 7, §6.11)."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------------------------
# boundary mask (docs/algorithm.md §6.4.1), the OpenCV way
# --------------------------------------------------------------------------------------------
def opencv_boundary_mask(label: np.ndarray, border: int = 6, dilation: int = 3) -> np.ndarray:
    """The official pipeline for one label map (h, w) -> bool (h, w).

    ``cv2.Canny(label_uint8, 0.1, 0.2)`` (aperture 3, L1 gradient; OpenCV floors both thresholds
    to 0), then zero a ``border``-pixel frame, then ``cv2.dilate`` with a ``dilation`` x
    ``dilation`` ones kernel, then ``> 50``. The official code crops ``[6:-6]`` and pads back,
    which fails for maps smaller than 12 px; zeroing the frame by slice assignment is the same
    thing wherever that works and well defined everywhere (when h <= 2*border or w <= 2*border
    the whole edge map is zeroed).
    """
    edges = cv2.Canny(np.ascontiguousarray(label, dtype=np.uint8), 0.1, 0.2)
    edges[:border, :] = 0
    edges[-border:, :] = 0
    edges[:, :border] = 0
    edges[:, -border:] = 0
    edges = cv2.dilate(edges, np.ones((dilation, dilation), np.uint8))
    return edges > 50


def reference_boundary_mask(labels: Tensor, border: int = 6, dilation: int = 3) -> Tensor:
    """Per-image OpenCV boundary mask of (B, h, w) integer labels -> (B, h, w) bool (CPU)."""
    masks = [opencv_boundary_mask(lab.cpu().numpy(), border, dilation) for lab in labels]
    return torch.from_numpy(np.stack(masks)).to(labels.device)


# --------------------------------------------------------------------------------------------
# student (docs/algorithm.md §3) and teacher (docs/algorithm.md §4)
# --------------------------------------------------------------------------------------------
def student_branch(clf: nn.Module, feat: Tensor, tau: float, eps: float) -> dict[str, Tensor]:
    """Coarse logits M, position features P_f, student logits O, prototypes S_p and P_p.

    Loops over images; within an image everything is a small matrix product.
    Returns M (B,K,h,w), P_f (B,C,h,w), X (B,C,N), O (B,K,h,w), S_p (B,K,C), P_p (B,K,C).
    """
    B, C, h, w = feat.shape
    S = clf.conv_seg.weight[:, :, 0, 0]  # (K, C), not detached
    bias = clf.conv_seg.bias
    E = clf.class_position.weight  # (K, C)
    K = S.shape[0]
    pe = clf.position_encoder

    # M = conv_seg(dropout(F)); the parity tests use dropout=0, so this is a plain 1x1 conv.
    M = torch.einsum("kc,bchw->bkhw", S, feat) + bias[None, :, None, None]
    P_f = F.conv2d(feat, pe.weight, pe.bias, stride=1, padding=1, groups=C)

    O, S_p, P_p, X_all = [], [], [], []
    for b in range(B):
        m = M[b].reshape(K, h * w)  # (K, N)
        f = feat[b].reshape(C, h * w)  # (C, N)
        pf = P_f[b].reshape(C, h * w)  # (C, N)

        # SPPA: spatial center = softmax over N of M, times P_f; prototype = phi_p([E ; P_c]).
        A = torch.softmax(m, dim=1)
        P_c = A @ pf.T  # (K, C)
        p_p = two_layer_mlp(clf.spatial_proj, torch.cat([E, P_c], dim=1))

        # SEPA: semantic center = class-probability weighted MEAN of F; prototype = phi_s([S_c ; S]).
        Q = torch.softmax(m, dim=0)
        S_c = (Q @ f.T) / (Q.sum(dim=1, keepdim=True) + eps)
        s_p = two_layer_mlp(clf.semantic_proj, torch.cat([S_c, S], dim=1))

        Z = (s_p + p_p) @ clf.center_proj.weight.T  # Lin_c, no bias
        X = f + pf
        O.append(cosine_logits(X, Z, tau, eps).reshape(K, h, w))
        S_p.append(s_p)
        P_p.append(p_p)
        X_all.append(X)
    return {
        "M": M,
        "P_f": P_f,
        "X": torch.stack(X_all),
        "O": torch.stack(O),
        "S_p": torch.stack(S_p),
        "P_p": torch.stack(P_p),
    }


def teacher_branch(
    clf: nn.Module, feat: Tensor, P_f: Tensor, X: Tensor, y_h: Tensor, tau: float, eps: float, ignore_index: int
) -> dict[str, Tensor]:
    """GT-guided teacher: O^ (B,K,h,w), S^_p (B,K,C), P^_p (B,K,C).

    ``y_h`` is the label nearest-downsampled to (h, w): presence of a class is decided there.
    Semantic centers are pooled over the whole batch, spatial centers per image (docs/algorithm.md §4).
    Absent classes fall back to the DETACHED prototype / embedding row; the concatenation
    partners S and E are not detached.
    """
    B, C, h, w = feat.shape
    S = clf.conv_seg.weight[:, :, 0, 0]
    E = clf.class_position.weight
    K = S.shape[0]
    f_all = feat.reshape(B, C, h * w)
    pf_all = P_f.reshape(B, C, h * w)
    lab = y_h.reshape(B, h * w)

    # Batch-level semantic GT centers (K, C).
    present_in_batch = {int(v) for v in torch.unique(lab)} - {ignore_index}
    rows = []
    for k in range(K):
        if k in present_in_batch:
            total = feat.new_zeros(C)
            count = 0
            for b in range(B):
                sel = lab[b] == k
                total = total + f_all[b][:, sel].sum(dim=1)
                count += int(sel.sum())
            rows.append(total / (count + eps))
        else:
            rows.append(S[k].detach())
    S_hat_c = torch.stack(rows)
    S_hat_p = two_layer_mlp(clf.teacher_semantic_proj, torch.cat([S_hat_c, S], dim=1))  # (K, C)

    O_hat, S_hat_p_all, P_hat_p_all = [], [], []
    for b in range(B):
        # Per-image spatial GT centers (K, C).
        present_in_image = {int(v) for v in torch.unique(lab[b])} - {ignore_index}
        rows = []
        for k in range(K):
            if k in present_in_image:
                sel = lab[b] == k
                rows.append(pf_all[b][:, sel].sum(dim=1) / (int(sel.sum()) + eps))
            else:
                rows.append(E[k].detach())
        P_hat_c = torch.stack(rows)
        p_hat_p = two_layer_mlp(clf.teacher_spatial_proj, torch.cat([P_hat_c, E], dim=1))

        Z_hat = (S_hat_p + p_hat_p) @ clf.teacher_center_proj.weight.T
        O_hat.append(cosine_logits(X[b], Z_hat, tau, eps).reshape(K, h, w))
        S_hat_p_all.append(S_hat_p)
        P_hat_p_all.append(p_hat_p)
    return {"O_hat": torch.stack(O_hat), "S_hat_p": torch.stack(S_hat_p_all), "P_hat_p": torch.stack(P_hat_p_all)}


# --------------------------------------------------------------------------------------------
# losses (docs/algorithm.md §6)
# --------------------------------------------------------------------------------------------
def _pixel_nll(logits: Tensor, y: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per-pixel -log softmax_K(logits)[y] (0 at ignored pixels) and the valid mask."""
    valid = y != ignore_index
    logp = torch.log_softmax(logits, dim=1)
    picked = logp.gather(1, torch.where(valid, y, 0)[:, None])[:, 0]
    return -picked * valid, valid


def ce_all_pixels(logits: Tensor, y: Tensor, ignore_index: int) -> Tensor:
    """§6.1 mmseg CE: ignored pixels give 0 but stay in the denominator B*H*W."""
    nll, _ = _pixel_nll(logits, y, ignore_index)
    return nll.sum() / y.numel()


def ce_valid_pixels(logits: Tensor, y: Tensor, ignore_index: int) -> Tensor:
    """§6.2/6.3 CE averaged over valid pixels only; 0 (not NaN) when there are none (Q6)."""
    nll, valid = _pixel_nll(logits, y, ignore_index)
    count = int(valid.sum())
    return nll.sum() / max(count, 1)


def response_distill(
    O: Tensor, O_hat: Tensor, t: Tensor, Bm: Tensor, smoothness: float, eps: float, ignore_index: int
) -> Tensor:
    """§6.4 L_rd at feature resolution, one class at a time.

    O, O_hat (B,K,h,w); t (B,h,w) downsampled label; Bm (B,h,w) boundary mask in {0,1}.
    """
    K = O.shape[1]
    p = torch.softmax(O_hat.detach(), dim=1)  # teacher side carries no gradient
    valid = t != ignore_index
    onehot = F.one_hot(torch.where(valid, t, 0), K).permute(0, 3, 1, 2).to(O.dtype)
    q = smoothness * p + (1.0 - smoothness) * onehot
    ell = -(q * torch.log_softmax(O, dim=1)).sum(dim=1)  # (B,h,w)
    entropy = -(p * torch.log(p + eps)).sum(dim=1) * valid  # (B,h,w)
    Bm = Bm.to(O.dtype)

    classes = sorted({int(v) for v in torch.unique(t)} - {ignore_index})
    if not classes:
        return O.new_zeros(())
    total = O.new_zeros(())
    for c in classes:
        m_c = (t == c).to(O.dtype)
        edge = (ell * entropy * m_c * Bm).sum() / ((entropy * m_c * Bm).sum() + eps)
        inner = (ell * entropy * m_c * (1 - Bm)).sum() / ((entropy * m_c * (1 - Bm)).sum() + eps)
        total = total + (edge + inner) / 2  # halved even when one part is empty (Q13)
    return total / (len(classes) + eps)


def dice_loss(logits_up: Tensor, y: Tensor, ignore_index: int) -> Tensor:
    """§6.5 sigmoid dice per (image, present class) at label resolution, / max(1, #masks).

    Ignored pixels are 0 in every mask but still counted in the sums (Q9).
    """
    total = logits_up.new_zeros(())
    num_masks = 0
    for b in range(y.shape[0]):
        present = sorted({int(v) for v in torch.unique(y[b])} - {ignore_index})
        # one gather per image: selecting each (b, k) map of the full tensor separately would
        # make autograd fill a full-size zero gradient per mask
        probs = torch.sigmoid(logits_up[b, present])  # (len(present), H, W)
        for s, k in zip(probs, present):
            target = (y[b] == k).to(logits_up.dtype)
            total = total + 1 - (2 * (s * target).sum() + 1) / (s.sum() + target.sum() + 1)
            num_masks += 1
    return total / max(1, num_masks)


def semantic_distill(S_p: Tensor, S_hat_p: Tensor, tau: float, eps: float) -> Tensor:
    """§6.6 L_sd (unweighted): ReLU of the off-diagonal difference of relation matrices."""
    B, K, _ = S_p.shape
    total = S_p.new_zeros(())
    off_diagonal = 1 - torch.eye(K, dtype=S_p.dtype, device=S_p.device)
    for b in range(B):
        u = l2_normalize(S_p[b], 1, eps)
        u_hat = l2_normalize(S_hat_p[b].detach(), 1, eps)
        R = torch.softmax(tau * u @ u.detach().T, dim=1)  # right factor detached (Q12)
        R_hat = torch.softmax(tau * u_hat @ u_hat.T, dim=1)
        D = (R - R_hat) * off_diagonal  # diagonal removed AFTER the softmax
        total = total + torch.clamp(D, min=0).sum()
    return total / (B * K)


def spatial_distill(P_p: Tensor, P_hat_p: Tensor) -> Tensor:
    """§6.7 L_pd (unweighted): CE between channel-softmaxed spatial prototypes, mean over B*K."""
    B, K, _ = P_p.shape
    total = P_p.new_zeros(())
    for b in range(B):
        for k in range(K):
            target = torch.softmax(P_hat_p[b, k].detach(), dim=0)
            total = total - (target * torch.log_softmax(P_p[b, k], dim=0)).sum()
    return total / (B * K)


# --------------------------------------------------------------------------------------------
# the whole training step (docs/algorithm.md §5)
# --------------------------------------------------------------------------------------------
def reference_eval_forward(clf: nn.Module, feat: Tensor, *, tau: float = 15.0, eps: float = 1e-12) -> Tensor:
    """Test step (§5): student logits O (B, K, h, w) only."""
    return student_branch(clf, feat, tau, eps)["O"]


def reference_forward(
    clf: nn.Module,
    feat: Tensor,
    target: Tensor,
    *,
    tau: float = 15.0,
    eps: float = 1e-12,
    smoothness: float = 0.5,
    border: int = 6,
    dilation: int = 3,
    ignore_index: int = 255,
    loss_weights: dict[str, float] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Training step of an SSA classifier with dropout 0, single process.

    feat (B, C, h, w); target (B, H, W) long with ``ignore_index``.
    Returns the student logits O (B, K, h, w) and the eight WEIGHTED loss terms, keyed like
    ``SSAClassifier``: ce, ce_coarse, ce_teacher, kd_response, dice, dice_teacher,
    kd_semantic, kd_spatial. Their sum is the objective.
    """
    dropout = getattr(clf, "dropout", None)
    assert dropout is None or isinstance(dropout, nn.Identity) or getattr(dropout, "p", 0.0) == 0.0, (
        "the reference assumes dropout=0 (deterministic coarse logits)"
    )
    weights = dict(DEFAULT_LOSS_WEIGHTS, **(loss_weights or {}))
    h, w = feat.shape[-2:]
    H, W = target.shape[-2:]

    student = student_branch(clf, feat, tau, eps)
    y_h = legacy_nearest_downsample(target, (h, w))
    teacher = teacher_branch(clf, feat, student["P_f"], student["X"], y_h, tau, eps, ignore_index)
    O, M0, O_hat = student["O"], student["M"], teacher["O_hat"]

    Bm = reference_boundary_mask(y_h, border, dilation).to(torch.float64)  # float64 as in the reference (Q4)
    kd_response = response_distill(O, O_hat, y_h, Bm, smoothness, eps, ignore_index)

    O_up, M0_up, O_hat_up = (upsample_for_loss(x, (H, W)) for x in (O, M0, O_hat))
    raw = {
        "ce": ce_all_pixels(O_up, target, ignore_index),
        "ce_coarse": ce_valid_pixels(M0_up, target, ignore_index),
        "ce_teacher": ce_valid_pixels(O_hat_up, target, ignore_index),
        "kd_response": kd_response,
        "dice": dice_loss(O_up, target, ignore_index),
        "dice_teacher": dice_loss(O_hat_up, target, ignore_index),
        "kd_semantic": semantic_distill(student["S_p"], teacher["S_hat_p"], tau, eps),
        "kd_spatial": spatial_distill(student["P_p"], teacher["P_hat_p"]),
    }
    return O, {key: weights[key] * value for key, value in raw.items()}


# --------------------------------------------------------------------------------------------
# test inputs shared by the SSA test files
# --------------------------------------------------------------------------------------------
def voronoi_labels(
    batch: int,
    size: tuple[int, int],
    classes: list[list[int]],
    generator: torch.Generator,
    ignore_rects: int = 1,
    ignore_index: int = 255,
) -> Tensor:
    """Random label maps (B, H, W) long: Voronoi cells labelled with ``classes[b]`` (a class may
    own several cells), plus ``ignore_rects`` random rectangles of ``ignore_index`` per image."""
    H, W = size
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    maps = []
    for b in range(batch):
        values = torch.tensor(classes[b])
        cells = 2 * len(values)
        seeds = torch.rand(cells, 2, generator=generator) * torch.tensor([H, W])
        owner = torch.cat([values, values[torch.randint(len(values), (cells - len(values),), generator=generator)]])
        dist = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
        label = owner[dist.argmin(0)]
        for _ in range(ignore_rects):
            y0, x0 = (int(torch.randint(n // 2, (1,), generator=generator)) for n in (H, W))
            y1, x1 = y0 + H // 4, x0 + W // 3
            label[y0:y1, x0:x1] = ignore_index
        maps.append(label)
    return torch.stack(maps)
