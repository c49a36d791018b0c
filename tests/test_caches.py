"""Compile caches across processes: FX graph cache and AOTAutograd cache.

Each run is a fresh Python process sharing one TORCHINDUCTOR_CACHE_DIR (a temp
directory), compiling a small training step under ``backend="flashkat"`` (a
KAT-style MLP whose activations are KAT's reference function, rewritten) and
a plain model under ``backend="inductor"``, and reporting the cache counters
of each (``counters["inductor"]["fxgraph_cache_*"]``,
``counters["aot_autograd"]["autograd_cache_*"]``):

1. fresh cache, both models            -> both miss
2. the inductor model alone            -> hit: flashkat's presence in run 1 did not change its key
3. both models again                   -> both hit, same results as run 1
4. a byte-identical COPY of the package first on PYTHONPATH
                                       -> the flashkat model hits (the key hashes contents, not paths)
5. the copy with a lowering file changed (a comment appended)
                                       -> the flashkat model misses; the inductor model still hits

The runs take ~10 s each on 2 cores (compiles on misses, imports on hits).
"""
from __future__ import annotations

import os
import shutil
import textwrap

import pytest

from helpers import run_result_script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_SCRIPT = textwrap.dedent(r"""
    import json, sys
    import torch
    import torch._inductor.config as iconfig
    import torch._functorch.config as fconfig
    iconfig.fx_graph_cache = True
    fconfig.enable_autograd_cache = True
    from torch._dynamo.utils import counters
    import flashkat_inductor
    import flashkat_inductor.backend  # noqa: F401
    sys.path.insert(0, TESTS)
    from test_recognisers import KanMlp

    def snapshot():
        return {"fx_hit": counters["inductor"]["fxgraph_cache_hit"],
                "fx_miss": counters["inductor"]["fxgraph_cache_miss"],
                "aot_hit": counters["aot_autograd"]["autograd_cache_hit"],
                "aot_miss": counters["aot_autograd"]["autograd_cache_miss"],
                "rewrites": counters["flashkat"]["rewrites"]}

    def step(model, backend, x):
        counters.clear()
        torch._dynamo.reset()
        out = torch.compile(model, backend=backend)(x)
        out.square().sum().backward()
        grads = [p.grad.double().sum().item() for p in model.parameters()]
        return dict(snapshot(), out=out.double().sum().item(), grads=grads)

    result = {"package": flashkat_inductor.__file__}
    torch.manual_seed(0)
    if "flashkat" in MODELS:
        result["flashkat"] = step(torch.nn.Sequential(KanMlp(32, 64)), "flashkat", torch.randn(2, 9, 32))
    if "inductor" in MODELS:
        torch.manual_seed(1)
        plain = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
        result["inductor"] = step(plain, "inductor", torch.randn(2, 9, 32))
    print("RESULT" + json.dumps(result))
""")


def run(cache_dir: str, models, pythonpath: str = ROOT) -> dict:
    code = f"TESTS = {HERE!r}\nMODELS = {list(models)!r}\n" + _SCRIPT
    return run_result_script(code, cwd=HERE, pythonpath=pythonpath, drop=("TORCHINDUCTOR_FORCE_DISABLE_CACHES",),
                             TORCHINDUCTOR_CACHE_DIR=cache_dir)


def _missed(r):
    return r["aot_miss"] >= 1 and r["fx_miss"] >= 1 and r["aot_hit"] == 0


def _hit(r):
    return r["aot_hit"] >= 1 and r["aot_miss"] == 0 and r["fx_miss"] == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("inductor_cache"))
    res = {"1": run(cache, ["flashkat", "inductor"]), "2": run(cache, ["inductor"]),
           "3": run(cache, ["flashkat", "inductor"])}
    copy_root = str(tmp_path_factory.mktemp("package_copy"))
    pkg = os.path.join(copy_root, "flashkat_inductor")
    shutil.copytree(os.path.join(ROOT, "flashkat_inductor"), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    res["4"] = run(cache, ["flashkat"], copy_root)
    with open(os.path.join(pkg, "lowerings", "forward.py"), "a") as f:
        f.write("\n# a harmless edit: any change to a file that shapes the output changes the cache key\n")
    res["5"] = run(cache, ["flashkat", "inductor"], copy_root)
    res["copy"] = pkg
    return res


def test_first_process_compiles(runs):
    r = runs["1"]
    assert _missed(r["flashkat"]) and _missed(r["inductor"]), r
    assert r["flashkat"]["rewrites"] == 2, r  # the two KAT activations were rewritten


def test_second_process_hits_flashkat_and_inductor(runs):
    r1, r3 = runs["1"], runs["3"]
    assert _hit(r3["flashkat"]), r3["flashkat"]
    assert _hit(r3["inductor"]), r3["inductor"]
    assert r3["flashkat"]["rewrites"] == 0  # a hit skips the passes: the cached code was reused
    for model in ("flashkat", "inductor"):
        assert r3[model]["out"] == r1[model]["out"] and r3[model]["grads"] == r1[model]["grads"], model


def test_inductor_entries_are_untouched_by_flashkat(runs):
    r2 = runs["2"]
    assert _hit(r2["inductor"]), r2  # written by a process that also compiled with flashkat
    assert r2["inductor"]["out"] == runs["1"]["inductor"]["out"]
    r5 = runs["5"]
    assert _hit(r5["inductor"]), r5["inductor"]  # a changed flashkat source does not touch them


def test_key_hashes_contents_not_paths(runs):
    r4 = runs["4"]
    assert r4["package"].startswith(os.path.dirname(runs["copy"])), r4["package"]
    assert _hit(r4["flashkat"]), r4


def test_changed_source_forces_a_miss(runs):
    r5 = runs["5"]
    assert r5["package"].startswith(os.path.dirname(runs["copy"])), r5["package"]
    assert _missed(r5["flashkat"]), r5["flashkat"]
    assert r5["flashkat"]["rewrites"] == 2
    assert r5["flashkat"]["out"] == runs["1"]["flashkat"]["out"]  # (a comment changes no code)
