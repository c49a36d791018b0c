"""The registry's entries for the real upstream KAT / FlashKAT kernels, checked without their code.

The upstream kernels (``Adamdad/rational_kat_cu``, ``OSU-STARLAB/FlashKAT``) are
not part of this project: ``flashkat_inductor.kat_functions.UPSTREAM_SIGNATURES``
holds only their parameter names and structural digests (how they were obtained
and verified is written next to them).  These tests check that those entries
are well-formed and consistent, that the project's own fixture kernels
(``tests/kat_modules.py``) are still told apart from them, and the launch
checks the upstream entries need (a row block that is a product of two
parameters, a channel loop of a given number of tiles, float32-only ``x``) on
hand-built launch nodes.  Fast: nothing is compiled and no kernel runs.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys

import pytest
import torch
from torch.fx import Graph

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import kat_modules as km  # noqa: E402
from flashkat_inductor import kat_functions as kf  # noqa: E402

UPSTREAM = kf.UPSTREAM_SIGNATURES
FIXTURES = {
    "KAT rational_fwd_kernel": km.rational_fwd_kernel,
    "KAT rational_bwd_kernel": km.rational_bwd_kernel,
    "FlashKAT flashkat_rational_fwd_kernel": km.flashkat_rational_fwd_kernel,
    "FlashKAT flashkat_rational_bwd_kernel": km.flashkat_rational_bwd_kernel,
}
SOURCE = re.compile(r"^(Adamdad/rational_kat_cu|OSU-STARLAB/FlashKAT) (\S+\.py@[0-9a-f]{8}) rational_(fwd|bwd)_kernel")


def _file(sig) -> str:
    """``path@commit`` of the upstream file an entry was read from."""
    return SOURCE.match(sig.name).group(2).split("/")[-1]


def _key(sig):
    return (sig.params, sig.constexprs, sig.digest)


def test_builtin_is_fixtures_plus_upstream():
    assert kf.BUILTIN_SIGNATURES == kf.FIXTURE_SIGNATURES + UPSTREAM
    assert len(UPSTREAM) == 6
    assert all(sig in kf.known_signatures() for sig in kf.BUILTIN_SIGNATURES)


@pytest.mark.parametrize("sig", UPSTREAM, ids=lambda s: f"{s.name.split()[1].split('/')[-1]}-{s.direction}")
def test_upstream_entry_is_well_formed(sig):
    m = SOURCE.match(sig.name)  # repository, path and commit of the file it was read from, kernel name
    assert m and m.group(3) == sig.direction, sig.name
    assert re.fullmatch(r"[0-9a-f]{16}", sig.digest)
    assert len(set(sig.params)) == len(sig.params)
    assert [p for p in sig.params if p in sig.constexprs] == list(sig.constexprs)  # in the kernel's order
    assert dataclasses.replace(sig) == sig  # re-validates (__post_init__)
    assert sig.semantics == ("safe", "kat", 6, 4)
    assert sig.x_dtypes == ("float32",)  # the upstream kernels do not convert x to float32
    roles = kf.FWD_ROLES if sig.direction == "fwd" else kf.BWD_ROLES
    assert sorted(r for r, _ in sig.pointers) == sorted(roles)
    assert all(p.endswith("_ptr") for _, p in sig.pointers)
    assert sig.pointer("x") == "x_ptr" and sig.pointer("num") == "a_ptr" and sig.pointer("den") == "b_ptr"
    for name in kf._names(sig.grid[1]) + tuple(sig.group_tiles):
        assert name in sig.constexprs, name  # block and tile sizes are compile-time constants


def test_upstream_entries_pair_up():
    """Each upstream file contributes a forward and a backward of the same semantics."""
    files = {}
    for sig in UPSTREAM:
        files.setdefault(_file(sig), {})[sig.direction] = sig
    assert len(files) == 3
    for pair in files.values():
        assert set(pair) == {"fwd", "bwd"}
        assert pair["fwd"].semantics == pair["bwd"].semantics
        assert pair["fwd"].x_dtypes == pair["bwd"].x_dtypes


def test_upstream_grid_rules():
    by = {(_file(s), s.direction): s for s in UPSTREAM}
    flash_bwd = by[("flash_rational_triton.py@3a39e87c", "bwd")]
    assert flash_bwd.grid == ("rows_by_group", ("BLOCK_M_OUT", "BLOCK_M_IN"))
    assert flash_bwd.group_tiles == ("GROUP_OUT", "GROUP_IN")
    assert (flash_bwd.rows, flash_bwd.numel, flash_bwd.channels, flash_bwd.group_width) == \
        ("B", None, "din", "group_size")
    for (_, direction), sig in by.items():
        if sig is flash_bwd:
            continue
        assert sig.grid == ("flat", "BLOCK_SIZE") and not sig.group_tiles
        assert (sig.numel, sig.channels, sig.group_width) == ("x_size", "D", "D_per_group")


def test_no_two_entries_collide():
    keys = [_key(s) for s in kf.BUILTIN_SIGNATURES]
    assert len(set(keys)) == len(keys)
    assert len({s.name for s in kf.BUILTIN_SIGNATURES}) == len(kf.BUILTIN_SIGNATURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixtures_are_not_taken_for_upstream_kernels(name):
    sig, fp, lookalike = kf.identify(FIXTURES[name])
    assert sig is not None and sig.name == name and sig in kf.FIXTURE_SIGNATURES
    assert lookalike is None
    for up in UPSTREAM:
        assert fp.digest != up.digest and fp.params != up.params


def test_fixture_and_upstream_digests_differ_even_where_the_code_is_alike():
    """Same arithmetic, different code: each digest names one source, not one function."""
    fixture_digests = {s.digest for s in kf.FIXTURE_SIGNATURES}
    assert not fixture_digests & {s.digest for s in UPSTREAM}


# ----------------------------------------------------------------------------
# The launch checks the upstream entries rely on, on hand-built graph nodes
# ----------------------------------------------------------------------------
def _launch(sig, tensors: dict, scalars: dict, grid):
    g = Graph()
    args = {}
    for param, t in tensors.items():
        node = g.placeholder(param)
        node.meta["example_value"] = t
        args[param] = node
    args.update(scalars)
    launch = g.call_function(print, (), {"grid": [tuple(grid)]})
    return kf._Launch(launch, sig, args)


def _flash_bwd():
    return next(s for s in UPSTREAM if s.grid[0] == "rows_by_group")


def _flash_bwd_launch(rows=140, din=640, groups=8, x_dtype=torch.float32, group_out=None, grid0=None, grid1=None,
                      block_m=(1, 64)):
    sig = _flash_bwd()
    gs = din // groups
    x = torch.empty(rows, din, dtype=x_dtype)
    tensors = {"grad_output_ptr": torch.empty(rows, din), "x_ptr": x, "a_ptr": torch.empty(groups, 6),
               "b_ptr": torch.empty(groups, 4), "d_x_ptr": torch.empty(rows, din), "d_a_ptr": torch.empty(groups, 6),
               "d_b_ptr": torch.empty(groups, 4)}
    bm = block_m[0] * block_m[1]
    scalars = {"B": rows, "din": din, "group_size": gs, "BLOCK_M_OUT": block_m[0], "BLOCK_M_IN": block_m[1],
               "GROUP_OUT": (gs + 63) // 64 if group_out is None else group_out, "GROUP_IN": 64}
    grid = ((rows + bm - 1) // bm if grid0 is None else grid0, groups if grid1 is None else grid1, 1)
    return _launch(sig, tensors, scalars, grid)


def test_row_tiled_upstream_backward_checks_pass_on_its_own_launch():
    assert kf._check_operands(_flash_bwd_launch(), "backward") == 8
    assert kf._check_operands(_flash_bwd_launch(rows=70, block_m=(2, 32)), "backward") == 8


@pytest.mark.parametrize("change, why", [
    (dict(group_out=1), "walks 1 x 64 channels of a group of 80"),
    (dict(grid0=2), "is not (cdiv(rows, BLOCK_M_OUT x BLOCK_M_IN)"),
    (dict(rows=140, block_m=(1, 32), grid0=3), "is not (cdiv(rows"),
    (dict(grid1=4), "G=8"),
    (dict(x_dtype=torch.bfloat16), "trusted for x in float32 only"),
])
def test_row_tiled_upstream_backward_checks_refuse(change, why):
    with pytest.raises(kf._LeftAlone, match=re.escape(why)):
        kf._check_operands(_flash_bwd_launch(**change), "backward")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_x_dtypes_are_per_signature(dtype):
    """The fixtures convert x to float32 in-kernel (bf16 x is trusted); the upstream 1-D
    kernels do not (bf16 x is not)."""
    fixture = next(s for s in kf.FIXTURE_SIGNATURES if s.name == "KAT rational_fwd_kernel")
    upstream = next(s for s in UPSTREAM if s.direction == "fwd" and "B" not in s.params and
                    "D_per_group" not in s.constexprs)
    x = torch.empty(4, 64, dtype=dtype)
    common = {"a_ptr": torch.empty(8, 6), "b_ptr": torch.empty(8, 4)}
    fx = _launch(fixture, {"x_ptr": x, "y_ptr": torch.empty_like(x), **common},
                 {"numel": x.numel(), "D": 64, "D_PER_GROUP": 8, "BLOCK": 256}, (1, 1, 1))
    up = _launch(upstream, {"x_ptr": x, "result_ptr": torch.empty_like(x), **common},
                 {"x_size": x.numel(), "D": 64, "group": 8, "D_per_group": 8, "BLOCK_SIZE": 256}, (1, 1, 1))
    assert kf._check_operands(fx, "forward") == 8
    if dtype == torch.float32:
        assert kf._check_operands(up, "forward") == 8
    else:
        with pytest.raises(kf._LeftAlone, match="float32 only"):
            kf._check_operands(up, "forward")


def test_signature_validation_covers_the_new_fields():
    sig = _flash_bwd()
    with pytest.raises(ValueError, match="not among the kernel's"):
        dataclasses.replace(sig, group_tiles=("GROUP_OUT", "NOPE"))
    with pytest.raises(ValueError, match="not among the kernel's"):
        dataclasses.replace(sig, grid=("rows_by_group", ("BLOCK_M_OUT", "BLOCK_X")))
    with pytest.raises(ValueError, match="x_dtypes"):
        dataclasses.replace(sig, x_dtypes=("float64",))
    with pytest.raises(ValueError, match="x_dtypes"):
        dataclasses.replace(sig, x_dtypes=())
