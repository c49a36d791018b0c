"""The bad-input matrix of tests/test_robustness.py as a table: case, eager outcome, compiled outcome.

    python bench/robustness_matrix.py [--markdown]

Eager is ``flashkat_inductor.rational`` (a training step: forward and the
gradients of every input that requires grad); compiled is the same call under
``torch.compile(backend="flashkat")`` (every valid case in one compiled graph,
as the test does).  Outcomes:

  ValueError: ... / TypeError: ...   the error raised (message as the user sees it)
  = reference                        y and gradients equal the float64 reference: NaN / +Inf / -Inf
                                     at the same positions, finite values within float32 accuracy
                                     (float16 / bfloat16: the reference rounded to the dtype, 1 ulp)
  = reference except: ...            the documented deviation the test asserts exactly
  DIFFERS: ...                       a failure (the test fails too)

The last rows are hand-written rationals rewritten by the recognisers; their
eager column is PyTorch on the user's code, the compiled column the rewritten
graph compared with it.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("TRITON_INTERPRET", "1")  # as tests/conftest.py, before anything imports Triton

import torch  # noqa: E402

import test_robustness as R  # noqa: E402


def _err(e) -> str:
    if e is None:
        return "ran (no error)"
    return f"{type(e).__name__}: {str(e).splitlines()[0]}"


def _value(case, inp, res) -> str:
    problems = R.value_outcome(case, inp, res)
    if problems:
        return "DIFFERS: " + "; ".join(problems)
    return "= reference" + (f" except: {case.note}" if case.note else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (default: plain columns)")
    args = ap.parse_args(argv)
    import torch._functorch.config as fconfig
    from torch._inductor import config as iconfig

    rows = []
    for case in R.ERROR_CASES:
        if case.cuda and not torch.cuda.is_available():
            rows.append((case.name, "skipped (needs CUDA)", "skipped (needs CUDA)"))
            continue
        rows.append((case.name, _err(R.error_outcome(case, "eager")), _err(R.error_outcome(case, "compiled"))))
    with iconfig.patch(fx_graph_cache=False), fconfig.patch(enable_autograd_cache=False):
        made_e, res_e = R.run_cases(R.VALUE_CASES, compiled=False)
        made_c, res_c = R.run_cases(R.VALUE_CASES, compiled=True)
        for i, case in enumerate(R.VALUE_CASES):
            rows.append((case.name, _value(case, made_e[i], res_e[i]), _value(case, made_c[i], res_c[i])))
        eager, count = R.run_hand(R.HAND_WRITTEN, None)
        flash, count = R.run_hand(R.HAND_WRITTEN, "flashkat")
    for i, case in enumerate(R.HAND_WRITTEN):
        diffs = []
        for what, e, f in zip(("y", "dx", "dnum", "dden"), eager[i], flash[i]):
            if e is not None and R._masks_differ(f, e):
                diffs.append(what)
        rewritten = "rewritten" if case.rewritten else "not rewritten (left to Inductor)"
        if not diffs:
            comp = f"{rewritten}; = eager (masks exact)"
        elif set(diffs) <= set(case.differs_from_eager):
            comp = f"{rewritten}; = eager except {', '.join(diffs)}: {case.note}"
        else:
            comp = f"{rewritten}; DIFFERS from eager in {', '.join(diffs)}"
        rows.append(("hand-written: " + case.name, "PyTorch autograd on the user's code", comp))

    head = ("case", "eager", "compiled (backend=\"flashkat\")")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("| --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    else:
        w = max(len(r[0]) for r in rows)
        for r in [head, *rows]:
            print(f"{r[0]:<{w}}  {r[1]}\n{'':<{w}}  {r[2]}")
    bad = [r for r in rows if "DIFFERS" in r[1] + r[2] or "ran (no error)" in r[1] + r[2]]
    print(f"\n{len(rows)} cases, {len(bad)} not as required", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
