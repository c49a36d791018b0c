"""explain(): the sites the backend rewrote, the kernels they became, and the near misses."""
from __future__ import annotations

import torch

from flashkat_inductor.explain import Explanation, SiteRow, explain

from helpers import coefficients
from test_recognisers import (
    KatTorchAct,
    horner_safe,
    nchw_horner_safe,
    numerator_reused,
    plain_denominator,
    powers_sum_abs_sum,
)


class Mixed(torch.nn.Module):
    """KAT's reference, a hand-written safe PAU, and a PAU whose numerator is reused."""

    def __init__(self):
        super().__init__()
        self.kat = KatTorchAct(groups=8, mode="gelu")
        a, b = coefficients(6, 4, 1, 8, kind="gelu")
        self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)
        a2, b2 = coefficients(6, 4, 4, 4)
        self.a2, self.b2 = torch.nn.Parameter(a2), torch.nn.Parameter(b2)
        self.fc = torch.nn.Linear(32, 32)

    def forward(self, x):
        h = self.kat(x)
        h = horner_safe(self.fc(h), self.a, self.b)
        return numerator_reused(h, self.a2, self.b2)


def test_explain_training(capsys):
    torch.manual_seed(0)
    model = Mixed()
    x = torch.randn(2, 5, 32, requires_grad=True)
    rows = explain(model, x)
    assert isinstance(rows, Explanation) and all(isinstance(r, SiteRow) for r in rows)
    done = {r.pattern: r for r in rows.rewritten}
    assert set(done) == {"kat_reference_signed", "horner_safe"}
    kat, pau = done["kat_reference_signed"], done["horner_safe"]
    assert (kat.form, kat.zero_sign, kat.groups, kat.m, kat.n, kat.graph) == ("signed", "torch", 8, 6, 4, "training")
    assert (pau.form, pau.zero_sign, pau.groups, pau.m, pau.n, pau.graph) == ("safe", "torch", 8, 6, 4, "training")
    for r in (kat, pau):  # forward and backward kernels (or extern calls) of the ops
        assert any("rational_fwd" in k for k in r.kernels) and any("rational_bwd" in k for k in r.kernels), r
    (miss,) = rows.near_misses
    assert miss.pattern == "horner_safe" and miss.graph == "training"
    assert "used outside the rational" in miss.reason
    table = capsys.readouterr().out
    assert "kat_reference_signed" in table and "left alone" in table and "2 rewritten, 1 left alone" in table
    # explain leaves no gradients behind
    assert x.grad is None and all(p.grad is None for p in model.parameters())


def test_explain_inference_and_reasons():
    torch.manual_seed(1)
    a, b = coefficients(6, 4, 4, 4, form="abs_sum")
    a8, b8 = coefficients(6, 4, 8, 8, form="abs_sum")

    def fn(x, img):
        y = powers_sum_abs_sum(x, a8, b8)
        z = plain_denominator(x, a8, b8)
        return y, z, nchw_horner_safe(img, a, b)

    rows = explain(fn, torch.randn(3, 32), torch.randn(2, 8, 3, 3), print_table=False)
    assert sorted((r.pattern, r.graph, r.groups) for r in rows.rewritten) == [
        ("horner_safe", "inference", 4), ("powers_abs_sum", "inference", 8)]
    assert all(any("rational_fwd" in k for k in r.kernels) for r in rows.rewritten)
    (miss,) = rows.near_misses
    assert "unknown denominator form" in miss.reason
    assert rows.compile_s > 0 and rows.registration_s >= 0
    assert "2 rewritten, 1 left alone" in rows.table()
