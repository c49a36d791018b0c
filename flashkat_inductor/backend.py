"""The ``flashkat`` torch.compile backend.

    model = torch.compile(model, backend="flashkat")     # no import needed
    model = torch.compile(model, backend="flashkat", options={"max_autotune": True})

The backend is Inductor plus one custom graph pass:

- ``joint_custom_pre_pass`` (training graphs, forward and backward together)
  and ``post_grad_custom_pre_pass`` (inference graphs) run
  :func:`flashkat_inductor.recognisers.rewrite_graph`, which replaces every
  recognised group-rational activation by ``flashkat::rational_fwd`` (whose
  autograd is ``flashkat::rational_bwd``);
- the project's Inductor lowerings for those ops are registered once, when
  ``flashkat_inductor.lowerings`` is importable (without them Inductor calls
  the ops as extern kernels).

Before Inductor, :func:`flashkat_inductor.kat_functions.rewrite_kat_functions`
rewrites, inside the graph Dynamo hands the backend, the ``autograd.Function``s
of KAT and FlashKAT that launch their own Triton kernels (forward and backward
bodies of each ``autograd_function_apply`` node) to the same ops; on torch
2.11, :mod:`flashkat_inductor.capture_shim` (installed when this module is
imported) lets Dynamo capture KAT's bound ``apply`` attribute whole first.

The pass is installed through ``compile_fx(..., config_patches=...)``, which
also reaches the lazily compiled backward; ``backend="inductor"`` never sees
it (the patterns live in the project's own ``PatternMatcherPass``es, not in
Inductor's global ones).  ``uuid()`` hashes every ``.py`` and ``.jinja`` file
of the package, so the FX-graph and AOTAutograd caches miss whenever any
source that shapes the output changes.

Registration: ``pyproject.toml`` declares the ``torch_dynamo_backends`` entry
point ``flashkat = "flashkat_inductor.backend:flashkat_backend"``; Dynamo
registers the name itself when it loads the entry point, so importing this
module registers it only where no entry point is installed (a source checkout),
which avoids Dynamo's "duplicate name" error.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch
from torch._inductor import custom_graph_pass as _cgp
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from . import capture_shim
from .kat_functions import rewrite_kat_functions
from .recognisers import rewrite_graph
from .recognisers.round_trips import drop_float32_round_trips
from .recognisers.shared_rows import unrepeat_shared_rows

BACKEND_NAME = "flashkat"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_SUFFIXES = (".py", ".jinja")


# ----------------------------------------------------------------------------
# Cache key: every source file that shapes the output
# ----------------------------------------------------------------------------
def source_files(root: str = PACKAGE_DIR) -> tuple:
    """Every .py and .jinja file under the package, sorted (relative order fixed)."""
    found = []
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s != "__pycache__" and not s.startswith("."))
        found.extend(os.path.join(d, f) for f in files if f.endswith(_SOURCE_SUFFIXES))
    return tuple(sorted(found))


_HASH_CACHE: dict = {}
# torch memoises get_hash_for_files on the paths alone (lru_cache), which would miss an
# edit; call the function itself and memoise on (path, mtime, size) here instead.
_hash_files = getattr(get_hash_for_files, "__wrapped__", get_hash_for_files)


def source_hash(files: Optional[tuple] = None, root: str = PACKAGE_DIR) -> str:
    """sha256 over the contents (and package-relative names) of ``files``.

    Recomputed whenever a file's size or mtime changes."""
    files = source_files(root) if files is None else tuple(files)
    stamp = []
    for f in files:
        st = os.stat(f)
        stamp.append((f, st.st_mtime_ns, st.st_size))
    stamp = tuple(stamp)
    if stamp not in _HASH_CACHE:
        names = "\n".join(os.path.relpath(f, root) for f in files)
        _HASH_CACHE.clear()
        _HASH_CACHE[stamp] = _hash_files(files, extra=names).hex()
    return _HASH_CACHE[stamp]


def _switches() -> tuple:
    """What changes the code a compile produces besides the sources (part of the cache key):
    the environment switches, and the lowerings' module-level switches (forward.ND_TILING,
    forward.GROUPED_RANGES, the backward's mode, configs and FAST_RCP override...), which tests
    and benchmarks flip in one process.  Without them a second compile after a flip would be
    served the first one's code by the FX graph cache."""
    from .lowerings import backward as bw, forward as fw

    env = tuple(os.environ.get(k, "") for k in ("FLASHKAT_DYNAMIC_REWRITES", "FLASHKAT_NO_LOWERINGS",
                                                "FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS", "FLASHKAT_KEEP_REPEATED_ROWS"))
    return env + (repr((fw.lowering_switches(), bw.lowering_switches())),)


# ----------------------------------------------------------------------------
# The pass
# ----------------------------------------------------------------------------
class FlashKatJointPass(CustomGraphPass):
    """joint_custom_pre_pass: rewrites training (joint forward + backward) graphs."""

    kind = "joint"

    def __call__(self, graph: torch.fx.Graph) -> None:
        rewrite_graph(graph, "joint")
        if os.environ.get("FLASHKAT_KEEP_REPEATED_ROWS", "0") != "1":
            unrepeat_shared_rows(graph)
        if os.environ.get("FLASHKAT_KEEP_FLOAT32_ROUND_TRIPS", "0") != "1":
            drop_float32_round_trips(graph)

    def uuid(self) -> Any:
        return (type(self).__name__, source_hash(), _switches())


# torch 2.13+ tells post-grad passes whether the graph is an inference graph
# (CustomInferenceAwareGraphPass); 2.11 does not, and calls pass(graph).
_PostBase = getattr(_cgp, "CustomInferenceAwareGraphPass", CustomGraphPass)


class FlashKatPostGradPass(_PostBase):  # type: ignore[misc, valid-type]
    """post_grad_custom_pre_pass: rewrites inference graphs (forward graphs of
    training are already rewritten by the joint pass; backward graphs are skipped)."""

    kind = "post"

    def __call__(self, graph: torch.fx.Graph, is_inference: Optional[bool] = None) -> None:
        rewrite_graph(graph, "post", is_inference)
        if os.environ.get("FLASHKAT_KEEP_REPEATED_ROWS", "0") != "1":
            unrepeat_shared_rows(graph)  # inference graphs; in training the joint pass did it

    def uuid(self) -> Any:
        return (type(self).__name__, source_hash(), _switches())


class _Chain(CustomGraphPass):
    """Our pass, then a pass the user installed in the same slot through options."""

    def __init__(self, ours, theirs):
        self.ours, self.theirs = ours, theirs

    def __call__(self, graph, is_inference=None):
        if is_inference is None:
            self.ours(graph)
        else:
            self.ours(graph, is_inference)
        theirs = self.theirs if isinstance(self.theirs, (list, tuple)) else [self.theirs]
        for p in theirs:
            if p is None:
                continue
            if is_inference is not None and _PostBase is not CustomGraphPass and isinstance(p, _PostBase):
                p(graph, is_inference)
            else:
                p(graph)

    def uuid(self):
        theirs = self.theirs if isinstance(self.theirs, (list, tuple)) else [self.theirs]
        ids = []
        for p in theirs:
            u = p.uuid() if isinstance(p, CustomGraphPass) else None
            if u is None and p is not None:
                return None  # an uncacheable user pass disables the cache, as in Inductor
            ids.append(u)
        return (self.ours.uuid(), tuple(ids))


class _PostChain(_Chain, _PostBase):  # type: ignore[misc, valid-type]
    pass


JOINT_PASS = FlashKatJointPass()
POST_GRAD_PASS = FlashKatPostGradPass()


# ----------------------------------------------------------------------------
# Options and lowerings
# ----------------------------------------------------------------------------
def inductor_config_patches(mode: Optional[str] = None, options: Optional[dict] = None, **direct) -> dict:
    """Inductor config from torch.compile's ``mode=`` and ``options=``, plus ours."""
    patches: dict = {}
    if mode and mode != "default":
        from torch._inductor import list_mode_options

        patches.update(list_mode_options(mode, None))
    for src in (options or {}, direct):
        for k, v in src.items():
            patches[k.replace("-", "_")] = v
    for slot, ours, chain in (
        ("joint_custom_pre_pass", JOINT_PASS, _Chain),
        ("post_grad_custom_pre_pass", POST_GRAD_PASS, _PostChain),
    ):
        theirs = patches.get(slot)
        patches[slot] = ours if theirs is None else chain(ours, theirs)
    return patches


_LOWERINGS = {"done": False, "available": None}


def register_lowerings_once() -> bool:
    """Register the project's Inductor lowerings, once, where the module exists.

    ``FLASHKAT_NO_LOWERINGS=1`` in the environment skips them (the ops then run
    as extern kernels): a switch to tell a rewrite problem from a lowering one."""
    if not _LOWERINGS["done"]:
        _LOWERINGS["done"] = True
        if os.environ.get("FLASHKAT_NO_LOWERINGS", "") not in ("", "0"):
            _LOWERINGS["available"] = False
            return False
        try:
            from .lowerings import register_lowerings
        except ImportError:
            _LOWERINGS["available"] = False
        else:
            register_lowerings()
            _LOWERINGS["available"] = True
    return bool(_LOWERINGS["available"])


# ----------------------------------------------------------------------------
# The backend
# ----------------------------------------------------------------------------
def flashkat_backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
    """torch.compile backend: Inductor with the flashkat rewrites and lowerings.

    ``kwargs`` are what ``torch.compile`` passes a named backend (``mode=``,
    ``options=``); any other keyword is taken as an Inductor option too."""
    from torch._inductor.compile_fx import compile_fx

    register_lowerings_once()
    rewrite_kat_functions(gm)  # KAT's / FlashKAT's Triton Functions: a no-op for graphs without them
    mode = kwargs.pop("mode", None)
    options = kwargs.pop("options", None)
    return compile_fx(gm, example_inputs, config_patches=inductor_config_patches(mode, options, **kwargs))


capture_shim.mark_flashkat_backend(flashkat_backend)


def register(name: str = BACKEND_NAME) -> None:
    """Register the backend under ``name`` unless Dynamo already knows the name
    (from the entry point, or an earlier call)."""
    from torch._dynamo.backends.registry import list_backends, register_backend

    if name not in list_backends(exclude_tags=()):
        register_backend(flashkat_backend, name=name)


register()
capture_shim.install()  # torch < 2.12 only (see capture_shim); a no-op elsewhere
