#!/usr/bin/python3
"""fixtures_autograd.py — PyTorch reference gradients for every differentiable foundation op,
written to tests/fixtures/autograd_foundation.lua (read by tests/lua/test_autograd.lua).

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_autograd.py
(Debian's python3-torch; see tests/tools/README.md.)

Every case reads (format of fixture_util.py)
    {name=, op=, args={...}, inputs={{shape=, data=}, ...}, requires_grad={true, false, ...},
     output={shape=, data=}, grad_output={shape=, data=}, grads={{shape=, data=} | false, ...}}
where grads[i] = d sum(grad_output * output) / d inputs[i], false for an input that does not
require grad. Dims and indices in args are 1-based, as the Lua API. `args.transposed` means the
first input is transposed (dims 1 and 2) before the op, so the op sees a non-contiguous view;
`args.order` lists which inputs the op takes, in order, when one is used twice (x * x: {1, 1}).

Inputs and grad_output are float32. Outputs and gradients are computed by torch in float64 from
those exact float32 values, then rounded to float32: the correctly rounded answer, independent of
torch's float32 kernels and summation order. The script also recomputes every gradient with
float32 torch and prints how far that lands from the stored answer in the tests' terms.
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_util import Fixture  # noqa: E402

SEED = 20240612
F32 = torch.float32
F64 = torch.float64
RTOL, ATOL = 1e-5, 1e-6          # the Lua tests' tolerances
RTOL_FOR_FAMILY = {"matmul": 1e-4}

fx = None        # the Fixture, made in main() (it seeds torch)
self_check = []  # (family, name, rtol): the rtol float32 torch needs (beyond atol) to match


def f32(values, shape=None):
    t = torch.tensor(values, dtype=F32)
    return t.reshape(shape) if shape is not None else t


def shape_name(shape):
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"


def run(fn, inputs, requires_grad, dtype, grad_output):
    """fn over inputs in dtype; returns (output, grads) with None for inputs without grad."""
    xs = [t.to(dtype).detach().requires_grad_(r) for t, r in zip(inputs, requires_grad)]
    out = fn(*xs)
    wrt = [x for x, r in zip(xs, requires_grad) if r]
    got = torch.autograd.grad(out, wrt, grad_output.to(dtype), allow_unused=True)
    grads, k = [], 0
    for x, r in zip(xs, requires_grad):
        if not r:
            grads.append(None)
            continue
        g = got[k]
        k += 1
        grads.append(torch.zeros_like(x) if g is None else g)
    return out.detach(), grads


def needed_rtol(got, want):
    """Worst (|got - want| - atol) / |want| over finite entries: the rtol got needs beyond atol
    (inf/nan must match exactly)."""
    got, want = got.to(F64).reshape(-1), want.to(F64).reshape(-1)
    assert torch.equal(torch.isnan(got), torch.isnan(want)), "nan pattern"
    inf = torch.isinf(want)
    assert torch.equal(got[inf], want[inf]), "inf pattern"
    fin = torch.isfinite(want)
    if not fin.any():
        return 0.0
    err = ((got[fin] - want[fin]).abs() - ATOL) / want[fin].abs().clamp_min(1e-30)
    return max(float(err.max()), 0.0)


def add(name, op, family, inputs, fn, args=None, requires_grad=None, grad_output=None):
    """One case: fn(*tensors) -> one tensor, differentiated in float64 (stored) and float32 (checked)."""
    inputs = [t.to(F32) for t in inputs]
    requires_grad = requires_grad or [True] * len(inputs)
    assert any(requires_grad), name
    with torch.no_grad():
        shape = fn(*[t.to(F64) for t in inputs]).shape
    if grad_output is None:
        grad_output = torch.randn(shape)
    grad_output = grad_output.to(F32)
    out, grads = run(fn, inputs, requires_grad, F64, grad_output)
    out32, grads32 = run(fn, inputs, requires_grad, F32, grad_output)
    worst = needed_rtol(out32, out.to(F32))
    for g32, g in zip(grads32, grads):
        if g is not None:
            worst = max(worst, needed_rtol(g32, g.to(F32)))
    self_check.append((family, name, worst))
    fx.add(name=name, op=op, family=family, args=args or {}, inputs=inputs,
           requires_grad=list(requires_grad), output=out.to(F32), grad_output=grad_output,
           grads=[False if g is None else g.to(F32) for g in grads])


# ---- unary ----------------------------------------------------------------------------------------

# Saturation (±100, ±25), the softplus threshold (19.5, 20, 20.5), relu/abs at 0, halves.
POINTS = [-100.0, -25.0, -20.5, -3.5, -2.5, -1.5, -1.0, -0.5, -0.3, 0.0, 0.3, 0.5, 1.0, 1.5, 2.5,
          3.5, 19.5, 20.0, 20.5, 25.0, 100.0]
POSITIVE = [1e-3, 0.01, 0.1, 0.5, 1.0, 2.0, 2.5, 10.0, 100.0, 1e4]
NONZERO = [-100.0, -3.5, -1.0, -0.3, 0.3, 0.5, 1.0, 2.5, 20.0, 1e3]

F = torch.nn.functional
UNARY = {
    "neg": torch.neg, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "abs": torch.abs, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "relu": torch.relu, "silu": F.silu, "softplus": F.softplus,
    "gelu": F.gelu, "sign": torch.sign, "square": torch.square, "reciprocal": torch.reciprocal,
    "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt"}


def gen_unary():
    for op, fn in UNARY.items():
        if op in POSITIVE_ONLY:
            special, rand = f32(POSITIVE, (2, 5)), torch.rand(3, 4) * 5 + 0.05
        elif op == "reciprocal":
            special, rand = f32(NONZERO, (2, 5)), (torch.rand(3, 4) + 0.2) * torch.randn(3, 4).sign()
        else:
            special, rand = f32(POINTS, (3, 7)), torch.randn(3, 4) * 3
        add("%s_special" % op, op, "unary", [special], fn)
        add("%s_rand_3x4" % op, op, "unary", [rand], fn)
    gelu_tanh = lambda x: F.gelu(x, approximate="tanh")
    add("gelu_tanh_special", "gelu", "unary", [f32(POINTS, (3, 7))], gelu_tanh, {"approximate": "tanh"})
    add("gelu_tanh_rand_3x4", "gelu", "unary", [torch.randn(3, 4) * 3], gelu_tanh, {"approximate": "tanh"})
    add("neg_operator_2x3", "neg", "unary", [torch.randn(2, 3)], torch.neg, {"operator": True})
    add("exp_scalar", "exp", "unary", [f32(0.75, ())], torch.exp)
    add("tanh_transposed_3x4", "tanh", "unary", [torch.randn(3, 4)], lambda x: torch.tanh(x.t()),
        {"transposed": True})
    # at 0 the derivative of these is infinite: ±inf (the sign of the upstream gradient), not nan
    for op in ("log", "sqrt", "rsqrt", "reciprocal"):
        add("%s_at_zero" % op, op, "unary", [f32([0.0, 0.25, 1.0, 4.0])], UNARY[op])


# ---- binary ---------------------------------------------------------------------------------------

BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
}
PAIRS = [((2, 3), (2, 3)), ((2, 3), (3,)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 3), ()),
         ((2, 1, 4), (3, 1))]


def binary_inputs(op, sa, sb):
    if op == "div":  # divisor away from zero
        return torch.randn(sa), (torch.rand(sb) + 0.5) * torch.where(torch.rand(sb) < 0.5, -1.0, 1.0)
    if op == "pow":  # positive base: any real exponent is defined
        return torch.rand(sa) * 1.5 + 0.5, torch.randn(sb) * 1.5
    return torch.randn(sa), torch.randn(sb)


def gen_binary():
    for op, fn in BINARY.items():
        for sa, sb in PAIRS:
            a, b = binary_inputs(op, sa, sb)
            add("%s_%s_%s" % (op, shape_name(sa), shape_name(sb)), op, "binary", [a, b], fn)
    for op in ("add", "sub", "mul", "div", "pow"):
        a, b = binary_inputs(op, (2, 3), (3,))
        add("%s_operator_2x3_3" % op, op, "binary", [a, b], BINARY[op], {"operator": True})
    # Only one side requiring grad.
    a, b = binary_inputs("mul", (2, 3), (3,))
    add("mul_2x3_3_b_const", "mul", "binary", [a, b], torch.mul, requires_grad=[True, False])
    a, b = binary_inputs("div", (3, 1), (1, 4))
    add("div_3x1_1x4_a_const", "div", "binary", [a, b], torch.div, requires_grad=[False, True])
    a, b = binary_inputs("pow", (2, 3), (2, 3))
    add("pow_2x3_exponent_const", "pow", "binary", [a, b], torch.pow, requires_grad=[True, False])
    # 0 ^ b: the base gradient is 0 for b = 2 and b = 0, the exponent gradient is masked where a == 0.
    add("pow_zero_base", "pow", "binary", [f32([0.0, 0.0, 1.5, 2.0, 0.0]), f32([2.0, 0.0, 0.0, 3.0, 1.0])],
        torch.pow)
    # A negative base: the exponent's gradient (log a) and a fractional power are nan, as in torch.
    add("pow_negative_base", "pow", "binary", [f32([-2.0, -1.5, -1.0, 3.0]), f32([2.0, 3.0, 0.5, 2.0])],
        torch.pow)
    # NaN on one side: torch.maximum/minimum pass the full gradient to both sides there.
    for op in ("maximum", "minimum"):
        add("%s_nan" % op, op, "binary", [f32([float("nan"), 1.0, -1.0]), f32([0.0, float("nan"), 2.0])],
            BINARY[op])
    # One tensor on both sides: both gradients land in the same leaf.
    for op in ("add", "sub", "mul", "div", "maximum"):
        add("%s_self_2x3" % op, op, "binary", [torch.randn(2, 3)], lambda x, fn=BINARY[op]: fn(x, x),
            {"order": [1, 1]})
    add("pow_self_2x3", "pow", "binary", [torch.rand(2, 3) + 0.5], lambda x: torch.pow(x, x), {"order": [1, 1]})
    # Ties: torch gives each side half the gradient (also across broadcasting).
    ta = f32([1.0, 2.0, -3.0, 0.5, 4.0, -1.0], (2, 3))
    tb = f32([1.0, 5.0, -3.0, 0.5, 0.0, -2.0], (2, 3))
    for op in ("maximum", "minimum"):
        add("%s_ties_2x3" % op, op, "binary", [ta, tb], BINARY[op])
        add("%s_ties_broadcast_2x3_3" % op, op, "binary",
            [f32([1.0, 2.0, 3.0, 0.0, 2.0, -3.0], (2, 3)), f32([1.0, 2.0, -3.0])], BINARY[op])


# A number on one side, through the operators: 2 - t, t / 3, 2 ^ t, t ^ 2.5, 1 / t, ...
SCALAR_CASES = [
    ("add", 1.5, False), ("add", 2.0, True), ("sub", 0.25, False), ("sub", 2.0, True),
    ("mul", -0.5, False), ("mul", 3.0, True), ("div", 3.0, False), ("div", 1.0, True),
    ("pow", 2.5, False), ("pow", 2.0, False), ("pow", 0.0, False), ("pow", -1.0, False),
    ("pow", 2.0, True),
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
        else:
            f = lambda x, fn=fn, s=s: fn(x, torch.full_like(x, s))
        name = "%s_scalar_%s_%g" % (op, "first" if first else "second", s)
        name = name.replace("-", "m").replace(".", "p")
        add(name, op, "binary", [t], f, {"scalar": s, "scalar_first": first})


# ---- clamp, where ---------------------------------------------------------------------------------

def gen_select():
    # values exactly at the bounds take the gradient (torch: lo <= x <= hi)
    x = f32([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, -2.0, 0.75, 3.0, -0.5], (3, 4))
    add("clamp_both_at_bounds", "clamp", "select", [x], lambda t: torch.clamp(t, -0.5, 1.0),
        {"lo": -0.5, "hi": 1.0})
    add("clamp_lo_only_at_bound", "clamp", "select", [x], lambda t: torch.clamp(t, min=0.0), {"lo": 0.0})
    add("clamp_hi_only_at_bound", "clamp", "select", [x], lambda t: torch.clamp(t, max=0.25), {"hi": 0.25})
    add("clamp_both_rand", "clamp", "select", [torch.randn(3, 4) * 2], lambda t: torch.clamp(t, -0.5, 1.0),
        {"lo": -0.5, "hi": 1.0})
    where = lambda c, a, b: torch.where(c != 0, a, b)
    add("where_3x1_3x4_4", "where", "select", [f32([1.0, 0.0, 1.0], (3, 1)), torch.randn(3, 4), torch.randn(4)],
        where, requires_grad=[False, True, True])
    add("where_4_2x1x4_scalar", "where", "select",
        [f32([0.0, 1.0, 1.0, 0.0]), torch.randn(2, 1, 4), f32(-7.0, ())], where,
        requires_grad=[False, True, True])
    add("where_2x3_b_const", "where", "select",
        [f32([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], (2, 3)), torch.randn(2, 3), torch.randn(2, 3)], where,
        requires_grad=[False, True, False])


# ---- reductions -----------------------------------------------------------------------------------

def torch_dims(dims):
    """1-based Lua dims (int, list or None) -> torch 0-based dims (None for all)."""
    if dims is None:
        return None
    if isinstance(dims, int):
        return dims - 1 if dims > 0 else dims
    return tuple(d - 1 if d > 0 else d for d in dims)


def dims_name(dims):
    if dims is None:
        return "all"
    if isinstance(dims, int):
        return "dim%s" % str(dims).replace("-", "m")
    return "dims" + "_".join(str(d) for d in dims)


REDUCE_VARIANTS = [(1, False), (2, True), (3, False), (-1, True), ([1, 3], False), ([1, 3], True),
                   ([2, 3], False), (None, False), ([1, 2, 3], True)]


def gen_reduce():
    x = torch.randn(3, 4, 5)
    for dims, keep in REDUCE_VARIANTS:
        td = torch_dims(dims)
        sfx = "%s_%s" % (dims_name(dims), "keep" if keep else "nokeep")
        args = {"keepdim": keep}
        if dims is not None:
            args["dims"] = dims
        everything = td is None
        add("sum_" + sfx, "sum", "reduce", [x],
            (lambda t: t.sum()) if everything else (lambda t, td=td, k=keep: t.sum(td, keepdim=k)), args)
        add("mean_" + sfx, "mean", "reduce", [x],
            (lambda t: t.mean()) if everything else (lambda t, td=td, k=keep: t.mean(td, keepdim=k)), args)
        for corr in (0, 1):
            for op, fn in (("var", torch.var), ("std", torch.std)):
                add("%s_c%d_%s" % (op, corr, sfx), op, "reduce", [x],
                    lambda t, fn=fn, td=td, k=keep, c=corr: fn(t, dim=td, correction=c, keepdim=k),
                    dict(args, correction=corr))
        for p in (1, 2, 3, math.inf):
            pname = "inf" if p == math.inf else str(p)
            add("norm_p%s_%s" % (pname, sfx), "norm", "reduce", [x],
                lambda t, p=p, td=td, k=keep: torch.linalg.vector_norm(t, ord=p, dim=td, keepdim=k),
                dict(args, p=float(p)))
    # the inf-norm splits the gradient evenly between the elements reaching it (here ±3 and ±2)
    tie = f32([2.0, -2.0, 1.0, 0.5, 3.0, -3.0, 1.0, 1.0, -1.0], (3, 3))
    add("norm_pinf_tie_dim2", "norm", "reduce", [tie],
        lambda t: torch.linalg.vector_norm(t, ord=math.inf, dim=1), {"p": math.inf, "dims": 2})
    add("norm_pinf_tie_all", "norm", "reduce", [tie],
        lambda t: torch.linalg.vector_norm(t, ord=math.inf), {"p": math.inf})
    # a zero row: the gradient there is 0 (not nan) for every p
    zero_row = f32([0.0, 0.0, 0.0, 3.0, -4.0, 0.0], (2, 3))
    for p in (1, 2, 3, math.inf):
        pname = "inf" if p == math.inf else str(p)
        add("norm_p%s_zero_row" % pname, "norm", "reduce", [zero_row],
            lambda t, p=p: torch.linalg.vector_norm(t, ord=p, dim=1), {"p": float(p), "dims": 2})
    # a constant row: torch masks the std gradient to 0 where std is 0 (var's is 0 anyway)
    const_row = f32([1.0, 1.0, 1.0, 1.0, 2.0, 4.0], (2, 3))
    for corr in (0, 1):
        add("std_c%d_constant_row" % corr, "std", "reduce", [const_row],
            lambda t, c=corr: torch.std(t, dim=1, correction=c), {"dims": 2, "correction": corr})
        add("var_c%d_constant_row" % corr, "var", "reduce", [const_row],
            lambda t, c=corr: torch.var(t, dim=1, correction=c), {"dims": 2, "correction": corr})
    add("std_constant_all", "std", "reduce", [torch.full((2, 2), 3.0)], lambda t: t.std())
    add("norm_p2_zero_all", "norm", "reduce", [torch.zeros(2, 3)], lambda t: torch.linalg.vector_norm(t),
        {"p": 2.0})
    add("sum_scalar", "sum", "reduce", [f32(1.5, ())], lambda t: t.sum())
    add("sum_transposed_dim1", "sum", "reduce", [torch.randn(3, 4)], lambda t: t.t().sum(0),
        {"dims": 1, "transposed": True})
    add("mean_1d_all", "mean", "reduce", [torch.randn(7)], lambda t: t.mean())


def no_ties(shape):
    n = 1
    for s in shape:
        n *= s
    return ((torch.randperm(n).to(F32) - n / 2) * 0.37 + torch.rand(n) * 0.1).reshape(shape)


def gen_maxmin():
    x = no_ties((3, 4, 5))
    assert x.unique().numel() == x.numel()
    for op in ("max", "min"):
        tfn = torch.max if op == "max" else torch.min
        for dim in (1, 2, 3, -1):
            for keep in (False, True):
                name = "%s_%s_%s" % (op, dims_name(dim), "keep" if keep else "nokeep")
                add(name, op, "maxmin", [x], lambda t, tfn=tfn, d=torch_dims(dim), k=keep: tfn(t, d, keepdim=k).values,
                    {"dim": dim, "keepdim": keep})
        add("%s_all" % op, op, "maxmin", [x], lambda t, tfn=tfn: tfn(t))
        # ties along a dim: torch picks the first occurrence, which takes the whole gradient
        ties = f32([1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 0.0, 2.0, 5.0, 5.0, 5.0, 5.0], (3, 4))
        add("%s_dim2_ties" % op, op, "maxmin", [ties], lambda t, tfn=tfn: tfn(t, 1).values, {"dim": 2})
        # torch spreads the gradient of a tied all-reduction evenly over the tied elements
        tied = f32([1.0, 5.0, 2.0, 5.0, -1.0, 5.0, -1.0, 0.0], (2, 4))
        add("%s_all_tie" % op, op, "maxmin", [tied], lambda t, tfn=tfn: tfn(t))


# ---- matmul ---------------------------------------------------------------------------------------

MATMUL_PAIRS = [((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((3,), (2, 3, 4)),
                ((2, 3, 4), (4,))]


def gen_matmul():
    for sa, sb in MATMUL_PAIRS:
        add("matmul_%s_%s" % (shape_name(sa), shape_name(sb)), "matmul", "matmul",
            [torch.randn(sa), torch.randn(sb)], torch.matmul)
    add("matmul_3x4_4x5_b_const", "matmul", "matmul", [torch.randn(3, 4), torch.randn(4, 5)], torch.matmul,
        requires_grad=[True, False])
    add("matmul_2x1x3x4_5x4x6_a_const", "matmul", "matmul", [torch.randn(2, 1, 3, 4), torch.randn(5, 4, 6)],
        torch.matmul, requires_grad=[False, True])
    add("matmul_transposed_4x3_4x5", "matmul", "matmul", [torch.randn(4, 3), torch.randn(4, 5)],
        lambda a, b: a.t() @ b, {"transposed": True})


# ---- shape ops ------------------------------------------------------------------------------------

def pieces_loss(pieces, used):
    """sum over the used pieces k of k * sum(piece_k^2): each piece's gradient is 2 k x."""
    total = None
    for k in used:
        term = (pieces[k - 1] * pieces[k - 1]).sum() * k
        total = term if total is None else total + term
    return total


def gen_shape():
    r = torch.randn
    add("view_2x3x4_6x4", "view", "shape", [r(2, 3, 4)], lambda t: t.view(6, 4), {"shape": [6, 4]})
    add("view_2x3x4_infer", "view", "shape", [r(2, 3, 4)], lambda t: t.view(-1), {"shape": [-1]})
    add("view_transposed_4x6_2x3x4", "view", "shape", [r(4, 6)], lambda t: t.t().view(2, 3, 4),
        {"shape": [2, 3, 4], "transposed": True})
    add("reshape_transposed_3x4_12", "reshape", "shape", [r(3, 4)], lambda t: t.t().reshape(12),
        {"shape": [12], "transposed": True})
    add("reshape_transposed_3x4_2x6", "reshape", "shape", [r(3, 4)], lambda t: t.t().reshape(2, 6),
        {"shape": [2, 6], "transposed": True})
    add("reshape_2x3x4_4x1x6", "reshape", "shape", [r(2, 3, 4)], lambda t: t.reshape(4, 1, 6),
        {"shape": [4, 1, 6]})
    add("flatten_2x3x4", "flatten", "shape", [r(2, 3, 4)], lambda t: t.flatten())
    add("permute_2x3x4_312", "permute", "shape", [r(2, 3, 4)], lambda t: t.permute(2, 0, 1),
        {"dims": [3, 1, 2]})
    add("permute_2x3x4x5_2413", "permute", "shape", [r(2, 3, 4, 5)], lambda t: t.permute(1, 3, 0, 2),
        {"dims": [2, 4, 1, 3]})
    add("transpose_2x3x4_1_3", "transpose", "shape", [r(2, 3, 4)], lambda t: t.transpose(0, 2),
        {"dim0": 1, "dim1": 3})
    add("transpose_3x4_t", "t", "shape", [r(3, 4)], lambda t: t.t())
    add("narrow_4x5_dim2", "narrow", "shape", [r(4, 5)], lambda t: t.narrow(1, 1, 3),
        {"dim": 2, "start": 2, "length": 3})
    add("narrow_4x5_dim1", "narrow", "shape", [r(4, 5)], lambda t: t.narrow(0, 2, 2),
        {"dim": 1, "start": 3, "length": 2})
    add("slice_4x5_dim2", "slice", "shape", [r(4, 5)], lambda t: t[:, 1:],
        {"dim": 2, "first": 2, "last": -1})
    add("select_3x4x5_dim2", "select", "shape", [r(3, 4, 5)], lambda t: t.select(1, 2),
        {"dim": 2, "index": 3})
    add("select_3x4_last", "select", "shape", [r(3, 4)], lambda t: t.select(0, -1),
        {"dim": 1, "index": -1})
    add("index_3x4_row2", "index", "shape", [r(3, 4)], lambda t: t[1], {"index": 2})
    add("squeeze_all_2x1x3x1", "squeeze", "shape", [r(2, 1, 3, 1)], lambda t: t.squeeze())
    add("squeeze_dim2_2x1x3x1", "squeeze", "shape", [r(2, 1, 3, 1)], lambda t: t.squeeze(1), {"dim": 2})
    add("unsqueeze_2x3_dim1", "unsqueeze", "shape", [r(2, 3)], lambda t: t.unsqueeze(0), {"dim": 1})
    add("unsqueeze_2x3_dim3", "unsqueeze", "shape", [r(2, 3)], lambda t: t.unsqueeze(2), {"dim": 3})
    add("expand_3x1_2x3x4", "expand", "shape", [r(3, 1)], lambda t: t.expand(2, 3, 4), {"shape": [2, 3, 4]})
    add("expand_1x4_keep", "expand", "shape", [r(1, 4)], lambda t: t.expand(3, -1), {"shape": [3, -1]})
    add("expand_scalar_2x3", "expand", "shape", [f32(0.5, ())], lambda t: t.expand(2, 3), {"shape": [2, 3]})
    add("contiguous_transposed_3x4", "contiguous", "shape", [r(3, 4)], lambda t: t.t().contiguous(),
        {"transposed": True})
    add("clone_2x3", "clone", "shape", [r(2, 3)], lambda t: t.clone())
    add("clone_transposed_3x4", "clone", "shape", [r(3, 4)], lambda t: t.t().clone(), {"transposed": True})
    add("cat_dim1_3_inputs", "cat", "shape", [r(2, 3), r(4, 3), r(1, 3)],
        lambda a, b, c: torch.cat([a, b, c], 0), {"dim": 1}, requires_grad=[True, False, True])
    add("cat_dim2_3_inputs", "cat", "shape", [r(2, 1), r(2, 3), r(2, 2)],
        lambda a, b, c: torch.cat([a, b, c], 1), {"dim": 2}, requires_grad=[False, True, True])
    add("cat_dim3_4d", "cat", "shape", [r(2, 1, 3, 2), r(2, 1, 2, 2), r(2, 1, 1, 2)],
        lambda a, b, c: torch.cat([a, b, c], 2), {"dim": 3})
    add("cat_repeated_input", "cat", "shape", [r(2, 3), r(1, 3)], lambda a, b: torch.cat([a, b, a], 0),
        {"dim": 1, "order": [1, 2, 1]})
    for dim in (1, 2, 3):
        add("stack_2x3_dim%d" % dim, "stack", "shape", [r(2, 3), r(2, 3), r(2, 3)],
            lambda a, b, c, d=dim: torch.stack([a, b, c], d - 1), {"dim": dim},
            requires_grad=[True, dim != 2, True])
    add("chunk_5x4_3_dim1", "chunk", "shape", [r(5, 4)], lambda t: pieces_loss(t.chunk(3, 0), [1, 2, 3]),
        {"chunks": 3, "dim": 1, "used": [1, 2, 3]})
    add("chunk_5x4_2_dim2_first_unused", "chunk", "shape", [r(5, 4)],
        lambda t: pieces_loss(t.chunk(2, 1), [2]), {"chunks": 2, "dim": 2, "used": [2]})
    add("split_5x4_size2", "split", "shape", [r(5, 4)], lambda t: pieces_loss(t.split(2, 0), [1, 2, 3]),
        {"size": 2, "used": [1, 2, 3]})
    add("split_5x4_sizes_dim1", "split", "shape", [r(5, 4)],
        lambda t: pieces_loss(t.split([1, 3, 1], 0), [1, 2, 3]), {"size": [1, 3, 1], "dim": 1, "used": [1, 2, 3]})
    add("split_5x4_sizes_dim2_middle_unused", "split", "shape", [r(5, 4)],
        lambda t: pieces_loss(t.split([1, 2, 1], 1), [1, 3]), {"size": [1, 2, 1], "dim": 2, "used": [1, 3]})


def report_self_check():
    """How far float32 torch lands from the stored answers, in the tests' terms."""
    worst = {}
    for family, name, e in self_check:
        if e >= worst.get(family, ("", -1.0))[1]:
            worst[family] = (name, e)
    for family in sorted(worst):
        name, e = worst[family]
        rtol = RTOL_FOR_FAMILY.get(family, RTOL)
        print("  float32 torch vs reference, %-7s worst rtol beyond atol %g: %.2e (%s; test rtol %g: %s)"
              % (family, ATOL, e, name, rtol, "ok" if e <= rtol else "OUTSIDE"))


def main():
    global fx
    fx = Fixture("autograd_foundation", seed=SEED, max_bytes=1_500_000)
    torch.set_default_dtype(F32)
    gen_unary()
    gen_binary()
    gen_scalar()
    gen_select()
    gen_reduce()
    gen_maxmin()
    gen_matmul()
    gen_shape()
    fx.write(os.path.basename(__file__))
    report_self_check()


if __name__ == "__main__":
    main()
