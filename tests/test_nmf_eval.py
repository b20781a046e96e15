"""SegNeXt's NMF bases at evaluation: deterministic by default, the reference's random draw on request."""
from __future__ import annotations

import subprocess
import sys

import torch
import torch.nn.functional as F

from ssaseg import create_model
from ssaseg.decoders.ham import NMF2D


def _input(channels: int = 16, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, channels, 6, 5, generator=torch.Generator().manual_seed(1))


def test_eval_is_deterministic_and_ignores_the_global_rng() -> None:
    x = _input()
    torch.manual_seed(0)
    nmf = NMF2D(16, md_r=4).eval()
    first = nmf(x)
    torch.manual_seed(123)
    assert torch.equal(nmf(x), first)
    torch.manual_seed(7)
    assert torch.equal(NMF2D(16, md_r=4).eval()(x), first)  # another instance, same bases
    # The image's result does not depend on the batch it is in.
    assert torch.equal(nmf(x[1:]), first[1:])


def test_eval_bases_are_a_normalised_uniform_draw_outside_the_state_dict() -> None:
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    nmf = NMF2D(32, md_s=2, md_r=8)
    assert torch.equal(torch.rand(3), before)  # construction leaves the global RNG alone
    bases = nmf.eval_bases
    assert bases.shape == (2, 16, 8) and (bases >= 0).all()
    torch.testing.assert_close(bases.norm(dim=1), torch.ones(2, 8))
    assert "eval_bases" not in nmf.state_dict()  # checkpoints are unchanged
    # eval output == NMF with those bases, computed plainly from the definition.
    x = _input(32, batch=1)
    xs = x.reshape(2, 16, 30)
    b = bases.clone()
    coef = F.softmax(xs.transpose(1, 2) @ b, dim=-1)
    for _ in range(7):
        coef = coef * (xs.transpose(1, 2) @ b) / (coef @ (b.transpose(1, 2) @ b) + 1e-6)
        b = b * (xs @ coef) / (b @ (coef.transpose(1, 2) @ coef) + 1e-6)
    coef = coef * (xs.transpose(1, 2) @ b) / (coef @ (b.transpose(1, 2) @ b) + 1e-6)
    torch.testing.assert_close(nmf.eval()(x), (b @ coef.transpose(1, 2)).reshape(1, 32, 6, 5))


def test_random_eval_and_training_draw_fresh_bases() -> None:
    x = _input()
    nmf = NMF2D(16, md_r=4, random_eval=True).eval()
    assert not torch.allclose(nmf(x), nmf(x))  # the reference: new bases every call (docs/algorithm.md Q22)
    nmf = NMF2D(16, md_r=4).train()
    assert not torch.allclose(nmf(x), nmf(x))  # training is unchanged: random per forward
    nmf.random_eval = True
    nmf.eval()
    assert not torch.allclose(nmf(x), nmf(x))  # the attribute switches it, too


def test_same_bases_in_another_process() -> None:
    code = (
        "import torch; from ssaseg.decoders.ham import NMF2D; torch.manual_seed(99); "
        "print(NMF2D(16, md_r=4).eval_bases.double().sum().item().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert out == NMF2D(16, md_r=4).eval_bases.double().sum().item().hex()


def test_segnext_inference_is_reproducible_by_default() -> None:
    torch.manual_seed(0)
    model = create_model("segnext_t", 5, classifier="ssa", channels=32).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(images)
        torch.manual_seed(2)
        assert torch.equal(model(images), a)
        reference = create_model("segnext_t", 5, classifier="ssa", channels=32, nmf_random_eval=True).eval()
        reference.load_state_dict(model.state_dict())
        assert reference.decoder.nmf.random_eval
        assert not torch.equal(reference(images), reference(images))
