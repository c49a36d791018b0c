"""The flashkat backend: entry point, registration, options, cache keys."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import flashkat_inductor.backend as backend_mod
from flashkat_inductor.backend import (
    JOINT_PASS,
    POST_GRAD_PASS,
    flashkat_backend,
    inductor_config_patches,
    register,
    source_files,
    source_hash,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# Entry point and registration
# ----------------------------------------------------------------------------
_FRESH = textwrap.dedent(
    """
    import json, sys, torch
    from torch._dynamo.utils import counters

    before = "flashkat_inductor" in sys.modules
    listed = "flashkat" in torch._dynamo.list_backends()

    def act(x, a, b):  # a hand-written safe PAU (Horner, 8 groups)
        xg = x.view(*x.shape[:-1], 8, x.shape[-1] // 8)
        p = a[:, 3:4]
        for i in (2, 1, 0):
            p = p * xg + a[:, i:i + 1]
        ax = xg.abs()
        q = b[:, 1:2].abs() * ax + b[:, 0:1].abs()
        return (p / (1 + q * ax)).view(x.shape)

    x, a, b = torch.randn(4, 32), torch.randn(8, 4), torch.randn(8, 2)
    with torch.no_grad():
        y = torch.compile(act, backend="flashkat")(x, a, b)
    ok = torch.allclose(y, act(x, a, b), rtol=1e-5, atol=1e-6)
    print(json.dumps({"imported_before": before, "listed": listed, "ok": ok,
                      "loaded_after": "flashkat_inductor" in sys.modules,
                      "counters": dict(counters["flashkat"])}))
    """
)


def test_entry_point_in_a_fresh_process(tmp_path):
    """backend="flashkat" resolves through the torch_dynamo_backends entry point, no import needed."""
    env = dict(os.environ, TORCHINDUCTOR_FX_GRAPH_CACHE="0", TORCHINDUCTOR_AUTOGRAD_CACHE="0",
               TORCHINDUCTOR_CACHE_DIR=os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
    if not env["TORCHINDUCTOR_CACHE_DIR"]:
        env.pop("TORCHINDUCTOR_CACHE_DIR")
    out = subprocess.run([sys.executable, "-c", _FRESH], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["imported_before"] is False and res["listed"] is True
    assert res["loaded_after"] is True and res["ok"] is True
    assert res["counters"] == {"horner_safe": 1, "rewrites": 1}


def test_registration_is_guarded():
    from torch._dynamo.backends.registry import list_backends, lookup_backend

    register()  # again: no "duplicate name"
    register(backend_mod.BACKEND_NAME)
    assert "flashkat" in list_backends(exclude_tags=())
    fn = lookup_backend("flashkat")
    assert getattr(fn, "__name__", "") == "flashkat_backend"


# ----------------------------------------------------------------------------
# Options reach Inductor, merged with the pass
# ----------------------------------------------------------------------------
@pytest.fixture
def spy_compile_fx(monkeypatch):
    import torch._inductor.compile_fx as cfx

    calls = []

    def fake_compile_fx(gm, example_inputs, config_patches=None, **kw):
        calls.append(dict(config_patches or {}))
        return gm.forward

    monkeypatch.setattr(cfx, "compile_fx", fake_compile_fx)
    return calls


def test_options_and_mode_pass_through(spy_compile_fx):
    torch._dynamo.reset()
    f = torch.compile(lambda x: x * 2 + 1, backend="flashkat",
                      options={"epilogue_fusion": False, "trace.enabled": False})
    assert torch.equal(f(torch.ones(3)), torch.full((3,), 3.0))
    torch._dynamo.reset()
    g = torch.compile(lambda x: x * 3, backend="flashkat", mode="max-autotune-no-cudagraphs")
    assert torch.equal(g(torch.ones(3)), torch.full((3,), 3.0))
    torch._dynamo.reset()
    with_options, with_mode = spy_compile_fx
    assert with_options["epilogue_fusion"] is False and with_options["trace.enabled"] is False
    assert with_mode["max_autotune"] is True  # from the mode
    for patches in (with_options, with_mode):
        assert patches["joint_custom_pre_pass"] is JOINT_PASS
        assert patches["post_grad_custom_pre_pass"] is POST_GRAD_PASS


def test_user_pass_in_the_same_slot_is_chained():
    from torch._inductor.custom_graph_pass import CustomGraphPass

    seen = []

    class Mine(CustomGraphPass):
        def __call__(self, graph):
            seen.append(len(graph.nodes))

        def uuid(self):
            return "mine-v1"

    patches = inductor_config_patches(options={"joint_custom_pre_pass": Mine()})
    chain = patches["joint_custom_pre_pass"]
    assert chain is not JOINT_PASS and chain.uuid() == (JOINT_PASS.uuid(), ("mine-v1",))
    g = torch.fx.symbolic_trace(lambda x: x + 1).graph
    chain(g)
    assert seen == [len(g.nodes)]
    # a user pass without a uuid disables the cache, as it would under Inductor
    assert inductor_config_patches(options={"joint_custom_pre_pass": lambda g: None})[
        "joint_custom_pre_pass"].uuid() is None


def test_backend_call_signature(spy_compile_fx):
    gm = torch.fx.symbolic_trace(lambda x: x + 1)
    flashkat_backend(gm, [torch.ones(2)], options={"max_autotune": False})
    flashkat_backend(gm, [torch.ones(2)], max_autotune=False)  # plain keywords are options too
    assert [p["max_autotune"] for p in spy_compile_fx] == [False, False]


# ----------------------------------------------------------------------------
# Cache key: every source file of the package
# ----------------------------------------------------------------------------
def test_source_files_cover_the_package():
    files = {os.path.relpath(f, backend_mod.PACKAGE_DIR) for f in source_files()}
    for must in ("backend.py", "ops.py", "semantics.py", os.path.join("recognisers", "scan.py"),
                 os.path.join("recognisers", "pointwise.py")):
        assert must in files
    on_disk = set()
    for d, _, fs in os.walk(backend_mod.PACKAGE_DIR):
        on_disk |= {os.path.relpath(os.path.join(d, f), backend_mod.PACKAGE_DIR)
                    for f in fs if f.endswith((".py", ".jinja")) and "__pycache__" not in d}
    assert files == on_disk


def test_uuid_changes_with_any_source_file(tmp_path):
    root = tmp_path / "flashkat_inductor"
    shutil.copytree(backend_mod.PACKAGE_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    h0 = source_hash(root=str(root))
    assert h0 == source_hash(root=str(root))
    with open(root / "recognisers" / "scan.py", "a") as f:
        f.write("\n# a change\n")
    h1 = source_hash(root=str(root))
    assert h1 != h0
    (root / "lowerings").mkdir(exist_ok=True)
    (root / "lowerings" / "new_template.jinja").write_text("{{ kernel }}")
    h2 = source_hash(root=str(root))
    assert len({h0, h1, h2}) == 3
    # the passes' uuids are the hash of the installed package
    assert JOINT_PASS.uuid()[1] == source_hash() == POST_GRAD_PASS.uuid()[1]


def test_uuid_follows_the_package_hash(monkeypatch):
    before = JOINT_PASS.uuid()
    monkeypatch.setattr(backend_mod, "source_hash", lambda *a, **k: "changed")
    assert JOINT_PASS.uuid() != before and POST_GRAD_PASS.uuid()[1] == "changed"


def test_uuid_follows_the_switches(monkeypatch):
    monkeypatch.delenv("FLASHKAT_DYNAMIC_REWRITES", raising=False)
    before = JOINT_PASS.uuid()
    monkeypatch.setenv("FLASHKAT_DYNAMIC_REWRITES", "0")  # the opt-out (dynamic rewrites are on by default)
    assert JOINT_PASS.uuid() != before


def test_uuid_follows_the_lowering_switches(monkeypatch):
    """The lowerings' module-level switches change the generated code, so they are in the cache
    key: a compile after a flip is not served the previous code by the FX graph cache."""
    from flashkat_inductor.lowerings import backward as bw, forward as fw

    before = JOINT_PASS.uuid()
    for name in ("ND_TILING", "GROUPED_RANGES", "EXPANDED_COEFFICIENTS"):
        monkeypatch.setattr(fw, name, not getattr(fw, name))
        assert JOINT_PASS.uuid() != before and POST_GRAD_PASS.uuid() != before, name
        monkeypatch.undo()
        assert JOINT_PASS.uuid() == before
    monkeypatch.setitem(bw._state, "configs", [(8, 64, 4, 1)])
    assert JOINT_PASS.uuid() != before
