#!/usr/bin/python3
"""make_fixtures.py — PyTorch reference cases for the foundation ops (elementwise, reductions,
matmul, creation), written as a Lua table to tests/fixtures/ops_foundation.lua.

Run from anywhere:  /usr/bin/python3 tests/tools/make_fixtures.py
(Debian's python3-torch; see tests/tools/README.md.)

Every case reads
    {name=, op=, inputs={{shape=, data=}, ...}, args={...}, output={shape=, data=}}
(or outputs={...} for max/min, which give values and indices). Data are flat, row-major, float32.
Dims in args and indices in outputs are 1-based, as the Lua API (docs/tensor-api.md).

Inputs are float32. Expected outputs are computed by torch in float64 from those exact float32
inputs and then rounded to float32: this is the correctly rounded answer, independent of the
summation order torch's float32 kernels happen to use, so the Lua tests can keep tight tolerances.
The script then recomputes every case in float32 torch and prints how far that lands from the
stored answer, as a check that the reference is what PyTorch users see. The Lua is written by
fixture_util.py (shared with the other generators); it refuses a file over 1.5 MB.
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240611
F32 = torch.float32
F64 = torch.float64

cases = []       # dicts: name, op, args, inputs, outputs (list of tensors)
self_check = []  # (name, float32 torch outputs, stored outputs, family)


# ---- case building --------------------------------------------------------------------------------

def add_case(name, op, inputs, args, fn, family):
    """fn(*tensors) -> tensor or tuple of tensors; run in float64 (stored) and float32 (checked)."""
    assert all(c["name"] != name for c in cases), name
    inputs = [t.to(F32) for t in inputs]
    ref = fn(*[t.to(F64) for t in inputs])
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    ref = [r.to(F32) for r in ref]
    f32 = fn(*inputs)
    f32 = list(f32) if isinstance(f32, (tuple, list)) else [f32]
    cases.append({"name": name, "op": op, "inputs": inputs, "args": args, "outputs": ref})
    self_check.append((name, [r.to(F32) for r in f32], ref, family))


def shape_name(shape):
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"


def f32(values, shape=None):
    t = torch.tensor(values, dtype=F32)
    return t.reshape(shape) if shape is not None else t


# ---- elementwise unary ----------------------------------------------------------------------------

# Negative, zero, halves (round), and large magnitudes (softplus threshold, sigmoid saturation, exp
# overflow to inf and underflow to subnormals).
SPECIAL = [-100.0, -25.0, -20.5, -3.5, -2.5, -1.5, -1.0, -0.5, -0.3, 0.0, 0.3, 0.5, 1.0, 1.5, 2.5,
           3.5, 19.5, 20.5, 25.0, 100.0]
POSITIVE = [1e-6, 1e-3, 0.1, 0.5, 1.0, 2.0, 2.5, 10.0, 100.0, 1e4, 3.4e37]

UNARY = {
    "neg": torch.neg, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "abs": torch.abs, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "relu": torch.relu, "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus, "gelu": torch.nn.functional.gelu,
    "sign": torch.sign, "square": torch.square, "reciprocal": torch.reciprocal,
    "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt"}


def gen_unary():
    for op, fn in UNARY.items():
        if op in POSITIVE_ONLY:
            special = f32(POSITIVE)
            rand = (torch.rand(3, 4) * 5 + 0.01)
        else:
            special = f32(SPECIAL, (4, 5))
            rand = torch.randn(3, 4) * 3
        add_case("%s_special" % op, op, [special], {}, fn, "unary")
        add_case("%s_rand_3x4" % op, op, [rand], {}, fn, "unary")
    gelu_tanh = lambda x: torch.nn.functional.gelu(x, approximate="tanh")
    add_case("gelu_tanh_special", "gelu", [f32(SPECIAL, (4, 5))], {"approximate": "tanh"},
             gelu_tanh, "unary")
    add_case("gelu_tanh_rand_3x4", "gelu", [torch.randn(3, 4) * 3], {"approximate": "tanh"},
             gelu_tanh, "unary")
    add_case("exp_scalar", "exp", [f32(0.75, ())], {}, torch.exp, "unary")
    # Unary minus through the operator: -t.
    add_case("neg_operator_2x3", "neg", [torch.randn(2, 3)], {"operator": True}, torch.neg, "unary")


# ---- elementwise binary ---------------------------------------------------------------------------

BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
    "eq": lambda a, b: torch.eq(a, b).to(a.dtype),
    "lt": lambda a, b: torch.lt(a, b).to(a.dtype),
    "ge": lambda a, b: torch.ge(a, b).to(a.dtype),
}
PAIRS = [((2, 3), (2, 3)), ((3, 1), (1, 4)), ((2, 3), (3,)), ((), (2, 3)), ((2, 1, 4), (3, 1)),
         ((1,), (5,)), ((4, 1, 3, 1), (2, 1, 5))]


def binary_inputs(op, sa, sb):
    if op == "div":  # keep the divisor away from zero; division by zero has its own case
        b = torch.rand(sb) + 0.5
        b = b * torch.where(torch.rand(sb) < 0.5, -1.0, 1.0)
        return torch.randn(sa), b
    if op == "pow":  # positive base, so any real exponent is defined
        return torch.rand(sa) * 1.5 + 0.5, torch.randn(sb) * 1.5
    if op in ("eq", "lt", "ge"):  # small integers, so that equal pairs occur
        return (torch.randint(-2, 3, sa).to(F32), torch.randint(-2, 3, sb).to(F32))
    return torch.randn(sa), torch.randn(sb)


def gen_binary():
    for op, fn in BINARY.items():
        for sa, sb in PAIRS:
            a, b = binary_inputs(op, sa, sb)
            add_case("%s_%s_%s" % (op, shape_name(sa), shape_name(sb)), op, [a, b], {}, fn, "binary")
    # The operators + - * / ^ between two tensors.
    for op in ("add", "sub", "mul", "div", "pow"):
        a, b = binary_inputs(op, (2, 3), (3,))
        add_case("%s_operator_2x3_3" % op, op, [a, b], {"operator": True}, BINARY[op], "binary")
    # IEEE specials: x/0, 0/0, 0^0, 0^-1, negative base with integer exponents.
    add_case("div_by_zero", "div", [f32([1.0, -1.0, 0.0, 2.5]), f32([0.0, 0.0, 0.0, -0.5])], {},
             torch.div, "binary")
    add_case("pow_specials", "pow", [f32([0.0, 0.0, -2.0, -2.0, -1.5, 4.0]),
                                     f32([0.0, -1.0, 2.0, 3.0, -2.0, 0.5])], {},
             torch.pow, "binary")
    # torch propagates NaN through maximum/minimum (unlike C's fmaxf).
    add_case("maximum_nan", "maximum", [f32([float("nan"), 1.0, -1.0]), f32([0.0, float("nan"), 2.0])],
             {}, torch.maximum, "binary")
    add_case("minimum_nan", "minimum", [f32([float("nan"), 1.0, -1.0]), f32([0.0, float("nan"), 2.0])],
             {}, torch.minimum, "binary")


# A number on one side, through the operators (2 - t, t / 3, 2 ^ t, ...).
SCALAR_CASES = [
    ("add", 1.5, False), ("add", 2.0, True), ("sub", 0.25, False), ("sub", 2.0, True),
    ("mul", 3.0, False), ("mul", -0.5, True), ("div", 3.0, False), ("div", 1.0, True),
    ("pow", 2.0, False), ("pow", 0.5, False), ("pow", 3.0, False), ("pow", 2.0, True),
    ("pow", -1.0, False),
]


def gen_scalar():
    for op, s, first in SCALAR_CASES:
        if op == "pow" and not first and s != int(s):
            t = torch.rand(2, 3) * 3 + 0.1  # fractional exponent: positive base
        elif op == "div" and first:
            t = (torch.rand(2, 3) + 0.5) * torch.where(torch.rand(2, 3) < 0.5, -1.0, 1.0)
        else:
            t = torch.randn(2, 3) * 2
        fn = BINARY[op]
        if first:
            f = lambda x, fn=fn, s=s: fn(torch.full_like(x, s), x)
            name = "%s_scalar_first_%g" % (op, s)
        else:
            f = lambda x, fn=fn, s=s: fn(x, torch.full_like(x, s))
            name = "%s_scalar_second_%g" % (op, s)
        name = name.replace("-", "m").replace(".", "p")
        add_case(name, op, [t], {"scalar": s, "scalar_first": first}, f, "binary")


def gen_select():
    x = torch.randn(3, 4) * 2
    add_case("clamp_both", "clamp", [x], {"lo": -0.5, "hi": 1.0},
             lambda t: torch.clamp(t, min=-0.5, max=1.0), "select")
    add_case("clamp_lo_only", "clamp", [x], {"lo": 0.0}, lambda t: torch.clamp(t, min=0.0), "select")
    add_case("clamp_hi_only", "clamp", [x], {"hi": 0.25}, lambda t: torch.clamp(t, max=0.25), "select")
    where = lambda c, a, b: torch.where(c != 0, a, b)
    add_case("where_3x1_3x4_4", "where",
             [f32([1.0, 0.0, 1.0], (3, 1)), torch.randn(3, 4), torch.randn(4)], {}, where, "select")
    add_case("where_4_2x1x4_scalar", "where",
             [f32([0.0, 1.0, 1.0, 0.0]), torch.randn(2, 1, 4), f32(-7.0, ())], {}, where, "select")
    add_case("where_2x3_same", "where",
             [f32([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], (2, 3)), torch.randn(2, 3), torch.randn(2, 3)], {},
             where, "select")


# ---- reductions -----------------------------------------------------------------------------------

def torch_dims(dims):
    """1-based Lua dims (int, list or None) -> torch 0-based dims (or None for all)."""
    if dims is None:
        return None
    if isinstance(dims, int):
        return dims - 1 if dims > 0 else dims
    return tuple(d - 1 if d > 0 else d for d in dims)


def dims_name(dims):
    if dims is None:
        return "all"
    if isinstance(dims, int):
        return "dim%s" % (str(dims).replace("-", "m"))
    return "dims" + "_".join(str(d) for d in dims)


def gen_reduce():
    x = torch.randn(3, 4, 5)
    # (dims, keepdim): every single dim, {1,3}, a negative dim, and all (nil dims / all dims kept).
    variants = []
    for dims in (1, 2, 3, [1, 3]):
        for keep in (False, True):
            variants.append((dims, keep))
    variants += [(-1, False), (None, False), ([1, 2, 3], True)]

    for dims, keep in variants:
        td = torch_dims(dims)
        sfx = "%s_%s" % (dims_name(dims), "keep" if keep else "nokeep")
        args = {"keepdim": keep}
        if dims is not None:
            args["dims"] = dims
        if td is None:
            add_case("sum_" + sfx, "sum", [x], args, lambda t: t.sum(), "reduce")
            add_case("mean_" + sfx, "mean", [x], args, lambda t: t.mean(), "reduce")
        else:
            add_case("sum_" + sfx, "sum", [x], args, lambda t, td=td, k=keep: t.sum(td, keepdim=k),
                     "reduce")
            add_case("mean_" + sfx, "mean", [x], args, lambda t, td=td, k=keep: t.mean(td, keepdim=k),
                     "reduce")
        for corr in (0, 1):
            a = dict(args, correction=corr)
            for op, fn in (("var", torch.var), ("std", torch.std)):
                add_case("%s_c%d_%s" % (op, corr, sfx), op, [x], a,
                         lambda t, fn=fn, td=td, k=keep, c=corr: fn(t, dim=td, correction=c, keepdim=k),
                         "reduce")
        for p in (1, 2, 3, math.inf):
            a = dict(args, p=float(p) if p == math.inf else p)
            pname = "inf" if p == math.inf else str(p)
            add_case("norm_p%s_%s" % (pname, sfx), "norm", [x], a,
                     lambda t, p=p, td=td, k=keep: torch.linalg.vector_norm(t, ord=p, dim=td, keepdim=k),
                     "reduce")
    # The defaults: var/std with correction omitted (1), norm with p omitted (2).
    add_case("var_default_dim2", "var", [x], {"dims": 2}, lambda t: t.var(1), "reduce")
    add_case("std_default_all", "std", [x], {}, lambda t: t.std(), "reduce")
    add_case("norm_default_all", "norm", [x], {}, lambda t: torch.linalg.vector_norm(t), "reduce")
    y = torch.randn(2, 3) * 4
    add_case("sum_2x3_dim2", "sum", [y], {"dims": 2}, lambda t: t.sum(1), "reduce")
    add_case("mean_1d_all", "mean", [torch.randn(7)], {}, lambda t: t.mean(), "reduce")


def no_ties(shape):
    """Distinct values: a shuffled, scaled permutation plus a little noise."""
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n).to(F32) - n / 2) * 0.37 + torch.rand(n) * 0.1


def gen_maxmin():
    x = no_ties((3, 4, 5)).reshape(3, 4, 5)
    assert x.unique().numel() == x.numel()
    for op in ("max", "min"):
        tfn = torch.max if op == "max" else torch.min
        for dim in (1, 2, 3, -1):
            for keep in (False, True):
                if dim == -1 and keep:
                    continue
                name = "%s_%s_%s" % (op, dims_name(dim), "keep" if keep else "nokeep")
                add_case(name, op, [x], {"dim": dim, "keepdim": keep},
                         lambda t, tfn=tfn, d=torch_dims(dim), k=keep:
                         (lambda r: (r.values, (r.indices + 1).to(t.dtype)))(tfn(t, d, keepdim=k)),
                         "maxmin")
        add_case("%s_all" % op, op, [x], {}, lambda t, tfn=tfn: tfn(t), "maxmin")
    for op in ("argmax", "argmin"):
        tfn = torch.argmax if op == "argmax" else torch.argmin
        for dim in (1, 2, 3):
            for keep in (False, True):
                name = "%s_%s_%s" % (op, dims_name(dim), "keep" if keep else "nokeep")
                add_case(name, op, [x], {"dim": dim, "keepdim": keep},
                         lambda t, tfn=tfn, d=dim - 1, k=keep: (tfn(t, d, keepdim=k) + 1).to(t.dtype),
                         "maxmin")
        add_case("%s_all" % op, op, [x], {}, lambda t, tfn=tfn: (tfn(t) + 1).to(t.dtype), "maxmin")
    v = no_ties((7,))
    add_case("max_1d_dim1", "max", [v], {"dim": 1},
             lambda t: (lambda r: (r.values, (r.indices + 1).to(t.dtype)))(torch.max(t, 0)), "maxmin")
    add_case("argmin_2x3_all", "argmin", [no_ties((6,)).reshape(2, 3)], {},
             lambda t: (torch.argmin(t) + 1).to(t.dtype), "maxmin")


# ---- matmul ---------------------------------------------------------------------------------------

def gen_matmul():
    pairs = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
             ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((1, 1), (1, 1)), ((3,), (2, 3, 4))]
    for sa, sb in pairs:
        add_case("matmul_%s_%s" % (shape_name(sa), shape_name(sb)), "matmul",
                 [torch.randn(sa), torch.randn(sb)], {}, torch.matmul, "matmul")
    # The large case uses multiples of 1/4 in [-2, 2]: every product and partial sum is exact in
    # float32, so the answer does not depend on the blocking/summation order of the BLAS.
    q = lambda *s: torch.randint(-8, 9, s).to(F32) / 4
    add_case("matmul_33x65_65x17", "matmul", [q(33, 65), q(65, 17)], {}, torch.matmul, "matmul")
    add_case("matmul_batched_3x17x9_9x33", "matmul", [q(3, 17, 9), q(9, 33)], {}, torch.matmul, "matmul")


# ---- creation -------------------------------------------------------------------------------------

def gen_creation():
    aranges = [(5,), (1, 4), (0, 1, 0.25), (0, 1, 0.1), (-1, 1, 0.3), (10, 0, -3), (0.5, 3),
               (1, 2.5, 0.5), (-2.5, 2.5, 0.5), (0, 3, 1.5)]
    for a in aranges:
        name = "arange_" + "_".join(("%g" % v).replace("-", "m").replace(".", "p") for v in a)
        add_case(name, "arange", [], list(a),
                 lambda a=a: torch.arange(*a, dtype=F64),
                 "creation")
    for a in [(0, 1, 5), (-1, 1, 7), (2, 10, 1), (0, 10, 11), (1, -1, 4)]:
        name = "linspace_" + "_".join(("%g" % v).replace("-", "m").replace(".", "p") for v in a)
        add_case(name, "linspace", [], list(a),
                 lambda a=a: torch.linspace(*a, dtype=F64), "creation")


# Creation cases have no inputs, so add_case cannot pick the precision from them: recompute the
# float32 self-check separately.
def fix_creation_self_check():
    for i, (name, _, ref, fam) in enumerate(self_check):
        if fam != "creation":
            continue
        c = next(c for c in cases if c["name"] == name)
        a = c["args"]
        if c["op"] == "arange":
            got = torch.arange(*a, dtype=F32)
        else:
            got = torch.linspace(*a, dtype=F32)
        self_check[i] = (name, [got], ref, fam)


# ---- self-check against float32 torch --------------------------------------------------------------

def report_self_check():
    """How far float32 torch is from the stored (float64-rounded) answers, in the tests' terms."""
    worst = {}
    for name, got, ref, fam in self_check:
        for g, r in zip(got, ref):
            assert tuple(g.shape) == tuple(r.shape), (name, g.shape, r.shape)
            g64, r64 = g.to(F64).reshape(-1), r.to(F64).reshape(-1)
            same_special = torch.equal(torch.isnan(g64), torch.isnan(r64)) and torch.equal(
                g64[torch.isinf(r64)], r64[torch.isinf(r64)])
            assert same_special, "float32 torch disagrees on inf/nan in %s" % name
            fin = torch.isfinite(r64)
            if fin.any():
                err = ((g64[fin] - r64[fin]).abs() - 1e-6) / r64[fin].abs().clamp_min(1e-30)
                e = max(float(err.max()), 0.0)
            else:
                e = 0.0
            if e > worst.get(fam, ("", -1.0))[1]:
                worst[fam] = (name, e)
    for fam in sorted(worst):
        name, e = worst[fam]
        print("  float32 torch vs reference, %-9s worst rtol beyond atol 1e-6: %.2e (%s)" % (fam, e, name))


def write_fixture():
    """The cases through fixture_util: output= for one result, outputs= for max/min's (values, indices)."""
    fx = Fixture("ops_foundation", seed=SEED, max_bytes=1_500_000)
    for c in cases:
        case = {"name": c["name"], "op": c["op"], "args": c["args"], "inputs": c["inputs"]}
        if len(c["outputs"]) == 1:
            case["output"] = c["outputs"][0]
        else:
            case["outputs"] = c["outputs"]
        fx.add(**case)
    fx.write(os.path.basename(__file__))


def main():
    torch.manual_seed(SEED)
    torch.set_default_dtype(F32)
    gen_unary()
    gen_binary()
    gen_scalar()
    gen_select()
    gen_reduce()
    gen_maxmin()
    gen_matmul()
    gen_creation()
    fix_creation_self_check()
    write_fixture()
    report_self_check()


if __name__ == "__main__":
    main()
