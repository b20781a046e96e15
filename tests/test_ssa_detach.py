"""Which loss term sends gradient where (docs/algorithm.md §6.10, Q12), one term at a time.

Each of the eight terms is backpropagated alone; every parameter (and the input feature map)
must be reached exactly when the dataflow of docs/algorithm.md says so. The table below is derived from
§3-§6:

* student logits O use conv_seg (weight as prototype S and, through the coarse logits M that
  gate SEPA/SPPA, weight and bias), the position encoder (P_f and X = F + P_f), the class
  embedding E, phi_s, phi_p and Lin_c;
* teacher logits O^ use S (weight only, as the non-detached concatenation partner; the
  fallback rows are detached), the position encoder, E (partner), phi^_s, phi^_p and Lin^_c;
* S_p (L_sd) uses phi_s, S and M (softmax over K: bias matters);
* P_p (L_pd) uses phi_p, E and P_c = softmax_N(M) P_f: the bias of M is constant along N, so the
  softmax over N removes it and conv_seg.bias gets (numerically) zero gradient;
* the teacher side of L_rd, L_sd and L_pd is detached, so those terms never reach the teacher.

The value-level consequences of these detaches (e.g. the exact gradient of the fallback rows)
are also pinned down by the gradient parity against the loop reference (test_ssa_parity.py).
"""
from __future__ import annotations

import copy

import pytest
import torch
from ssa_reference import l2_normalize, legacy_nearest_downsample, student_branch, teacher_branch, voronoi_labels
from torch import Tensor

from ssaseg.classifiers import SSAClassifier

pytestmark = pytest.mark.usefixtures("single_thread")

IGNORE = 255
C, K = 8, 6


def _mlp(prefix: str) -> set[str]:
    return {f"{prefix}.0.weight", f"{prefix}.2.weight", f"{prefix}.2.bias"}


CONV_W, CONV_B = "conv_seg.weight", "conv_seg.bias"
POS = {"position_encoder.weight", "position_encoder.bias"}
EMB = {"class_position.weight"}
STUDENT_MODULES = _mlp("semantic_proj") | _mlp("spatial_proj") | {"center_proj.weight"}
TEACHER_MODULES = _mlp("teacher_semantic_proj") | _mlp("teacher_spatial_proj") | {"teacher_center_proj.weight"}

STUDENT_LOGITS = {CONV_W, CONV_B, "feat"} | POS | EMB | STUDENT_MODULES
TEACHER_LOGITS = {CONV_W, "feat"} | POS | EMB | TEACHER_MODULES

EXPECTED_REACH = {
    "ce": STUDENT_LOGITS,
    "dice": STUDENT_LOGITS,
    "kd_response": STUDENT_LOGITS,  # O^ detached: nothing reaches the teacher
    "ce_coarse": {CONV_W, CONV_B, "feat"},
    "ce_teacher": TEACHER_LOGITS,  # no conv_seg.bias, no student projections
    "dice_teacher": TEACHER_LOGITS,  # O^ is NOT detached in the teacher dice
    "kd_semantic": {CONV_W, CONV_B, "feat"} | _mlp("semantic_proj"),
    "kd_spatial": {CONV_W, "feat"} | POS | EMB | _mlp("spatial_proj"),
}


def _make(seed: int = 0) -> SSAClassifier:
    torch.manual_seed(seed)
    clf = SSAClassifier(C, K, dropout=0.0)
    with torch.no_grad():  # non-trivial coarse logits so every gate carries gradient
        clf.conv_seg.weight.normal_(0.0, 0.3)
        clf.conv_seg.bias.normal_(0.0, 0.5)
    return clf.double().train()


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two images, classes 0..3 of 6 (4, 5 absent), 255 blocks; 16x16 features, 64x64 labels."""
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, C, 16, 16, generator=g, dtype=torch.float64)
    target = voronoi_labels(2, (64, 64), [[0, 1, 2], [1, 3]], g)
    return feat, target


def _grads_of_each_term(clf: SSAClassifier, feat: Tensor, target: Tensor) -> dict[str, dict[str, Tensor | None]]:
    feat = feat.clone().requires_grad_(True)
    _, losses = clf(feat, target)
    named = dict(clf.named_parameters())
    named["feat"] = feat
    result = {}
    for key, loss in losses.items():
        grads = torch.autograd.grad(loss, list(named.values()), retain_graph=True, allow_unused=True)
        result[key] = dict(zip(named, grads))
    return result


@pytest.fixture(scope="module")
def term_grads() -> dict[str, dict[str, Tensor | None]]:
    feat, target = _inputs()
    return _grads_of_each_term(_make(), feat, target)


@pytest.mark.parametrize("term", sorted(EXPECTED_REACH))
def test_gradient_reach_of_each_term(term: str, term_grads) -> None:
    grads = term_grads[term]
    assert set(grads) == {n for n, _ in _make().named_parameters()} | {"feat"}
    size = {n: 0.0 if g is None else g.abs().max().item() for n, g in grads.items()}
    scale = max(size.values())
    assert scale > 0, f"{term} gives no gradient at all"
    reached = {n for n, s in size.items() if s > 1e-6 * scale}
    # "not reached": no gradient, or exactly cancelling up to float64 rounding (conv_seg.bias in L_pd)
    unclear = {n: s for n, s in size.items() if 1e-10 * scale < s <= 1e-6 * scale}
    assert not unclear, f"{term}: ambiguous gradient sizes {unclear}"
    assert reached == EXPECTED_REACH[term], (
        f"{term}: reaches unexpectedly {sorted(reached - EXPECTED_REACH[term])}, "
        f"misses {sorted(EXPECTED_REACH[term] - reached)}"
    )


def test_teacher_fallback_rows_are_detached() -> None:
    """Label valid only off the nearest-sampling grid: every teacher center falls back to
    sg(S) / sg(E), yet ce_teacher and dice_teacher are non-zero. S and E then reach the teacher
    only as concatenation partners; with those input columns of phi^_s / phi^_p zeroed, they
    must get exactly no gradient (they would if the fallback rows were not detached)."""
    feat, target = _inputs(1)
    target[:, ::4, ::4] = IGNORE  # rows/cols 0, 4, 8, ... are what 64 -> 16 nearest picks
    assert (legacy_nearest_downsample(target, (16, 16)) == IGNORE).all() and (target != IGNORE).any()

    clf = _make(1)
    grads = _grads_of_each_term(clf, feat, target)
    for term in ("ce_teacher", "dice_teacher"):  # the partners themselves are not detached
        assert grads[term][CONV_W].abs().max() > 0 and grads[term]["class_position.weight"].abs().max() > 0

    with torch.no_grad():
        clf.teacher_semantic_proj[0].weight[:, C:] = 0  # partner S of phi^_s([S^_c ; S])
        clf.teacher_spatial_proj[0].weight[:, C:] = 0  # partner E of phi^_p([P^_c ; E])
    grads = _grads_of_each_term(clf, feat, target)
    for term in ("ce_teacher", "dice_teacher"):
        assert grads[term]["feat"].abs().max() > 0
        for name in (CONV_W, "class_position.weight"):
            g = grads[term][name]
            assert g is None or not g.any(), f"{term} reaches {name} through a fallback row"


def _relation_loss(S_p: Tensor, S_hat_p: Tensor, detach_right: bool, diagonal_after_softmax: bool) -> Tensor:
    """L_sd (x10) with the two Q12 choices switchable, for the counterfactuals below."""
    tau, eps = 15.0, 1e-12
    u = l2_normalize(S_p, 2, eps)
    u_hat = l2_normalize(S_hat_p.detach(), 2, eps)
    eye = torch.eye(S_p.shape[1], dtype=torch.bool)
    logits = tau * u @ (u.detach() if detach_right else u).transpose(1, 2)
    logits_hat = tau * u_hat @ u_hat.transpose(1, 2)
    if diagonal_after_softmax:
        diff = (torch.softmax(logits, -1) - torch.softmax(logits_hat, -1)).masked_fill(eye, 0)
    else:
        masked = [torch.softmax(x.masked_fill(eye, float("-inf")), -1) for x in (logits, logits_hat)]
        diff = (masked[0] - masked[1]).masked_fill(eye, 0)
    return 10 * diff.clamp_min(0).sum() / (S_p.shape[0] * S_p.shape[1])


def test_semantic_relation_detach_and_diagonal(term_grads) -> None:
    """The student relation's right factor is detached and the diagonal is removed after the
    softmax (Q12). The fast module's kd_semantic gradient must equal that choice and differ from
    both alternatives (so this test can tell them apart)."""
    feat, target = _inputs()
    ref = copy.deepcopy(_make())
    student = student_branch(ref, feat, 15.0, 1e-12)
    y_h = legacy_nearest_downsample(target, feat.shape[-2:])
    teacher = teacher_branch(ref, feat, student["P_f"], student["X"], y_h, 15.0, 1e-12, IGNORE)
    params = list(ref.semantic_proj.parameters())
    names = ["semantic_proj.0.weight", "semantic_proj.2.weight", "semantic_proj.2.bias"]
    fast = torch.cat([term_grads["kd_semantic"][n].flatten() for n in names])

    def grad_of(**choice: bool) -> Tensor:
        loss = _relation_loss(student["S_p"], teacher["S_hat_p"], **choice)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])

    spec = grad_of(detach_right=True, diagonal_after_softmax=True)
    torch.testing.assert_close(fast, spec, rtol=1e-5, atol=1e-10)
    alternatives = (
        dict(detach_right=False, diagonal_after_softmax=True),
        dict(detach_right=True, diagonal_after_softmax=False),
    )
    for alternative in alternatives:
        other = grad_of(**alternative)
        assert (other - spec).abs().max() > 1e-3 * spec.abs().max(), f"{alternative} is indistinguishable"
