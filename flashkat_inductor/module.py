"""``GroupRational``: a drop-in for KAT's ``KAT_Group`` running the project's ops."""
from __future__ import annotations

import torch
from torch import nn

from .ops import rational
from .semantics import check_form, init_coefficients


class GroupRational(nn.Module):
    """Group-rational activation (GR-KAN) with KAT_Group's constructor and parameters.

    Same arguments as ``KAT_Group(num_groups=8, mode="gelu", device=...)``, the
    same initialisation table and the same parameter names and shapes
    (``weight_numerator (1, 6)`` shared by all groups, ``weight_denominator
    (num_groups, 4)``), so KAT checkpoints load unchanged.

    ``form`` and ``zero_sign`` default to what KAT's CUDA kernels compute:
    the "safe" denominator with ``sign(0) = +1`` (so the ``identity``
    initialisation, whose denominator is all zeros, still trains).
    """

    def __init__(self, num_groups: int = 8, mode: str = "gelu", device=None, dtype=None,
                 *, form: str = "safe", zero_sign: str = "kat"):
        super().__init__()
        check_form(form, zero_sign)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"GroupRational: num_groups must be a positive int, got {num_groups!r}")
        num, den = init_coefficients(mode)
        factory = {"device": device, "dtype": dtype or torch.float32}
        self.order = (len(num) - 1, len(den))
        self.num_groups = num_groups
        self.mode = mode
        self.form = form
        self.zero_sign = zero_sign
        self.weight_numerator = nn.Parameter(torch.tensor([num], **factory))
        self.weight_denominator = nn.Parameter(torch.tensor([den] * num_groups, **factory))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return rational(input, self.weight_numerator, self.weight_denominator,
                        form=self.form, zero_sign=self.zero_sign)

    def extra_repr(self) -> str:
        return (f"num_groups={self.num_groups}, order={self.order}, mode={self.mode!r}, "
                f"form={self.form!r}, zero_sign={self.zero_sign!r}")
