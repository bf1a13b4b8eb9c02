#!/usr/bin/python3
"""fixtures_ode_dense.py — SciPy reference runs for dense output (engine/ode.c), written to
tests/fixtures/ode_dense_scipy.lua and read by tests/lua/test_ode.lua (TestOdeDenseOutput).

Run from anywhere:  /usr/bin/python3 tests/tools/fixtures_ode_dense.py   (Debian's python3-scipy)

SciPy's solve_ivp steps over the whole span with its own step control and evaluates t_eval on each
step's interpolant (RK45: Shampine's quartic; RK23: the cubic Hermite), so output times never
change its steps. For each problem of fixtures_ode.py, each (rtol, atol) pair and RK45 / RK23, this
runs solve_ivp with N_DENSE output times over the span and checks that nfev equals the run without
t_eval (the script fails otherwise). Stored per run: nfev, the accepted steps (from the run without
t_eval), SciPy's interpolated values at the output times, and the DOP853 reference there (rtol
1e-12, atol 1e-14, float64).
"""

import os
import sys

import numpy as np
from scipy.integrate import solve_ivp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixtures_ode import PROBLEMS, write_cases  # noqa: E402

TOLERANCES = [(1e-4, 1e-7), (1e-6, 1e-9)]
METHODS = [("dopri5", "RK45"), ("bosh3", "RK23")]
N_DENSE = 41


def main():
    cases = []
    for name, f, y0, t0, t1, _exact in PROBLEMS:
        ts = np.linspace(t0, t1, N_DENSE)
        ref = solve_ivp(f, (t0, t1), y0, method="DOP853", rtol=1e-12, atol=1e-14, t_eval=ts)
        assert ref.success, ref.message
        runs = []
        for rtol, atol in TOLERANCES:
            for ours, theirs in METHODS:
                dense = solve_ivp(f, (t0, t1), y0, method=theirs, rtol=rtol, atol=atol, t_eval=ts)
                plain = solve_ivp(f, (t0, t1), y0, method=theirs, rtol=rtol, atol=atol)
                assert dense.success and plain.success
                if dense.nfev != plain.nfev:
                    raise SystemExit("%s %s: t_eval changed nfev (%d vs %d)" % (name, theirs, dense.nfev, plain.nfev))
                runs.append({"method": ours, "scipy_method": theirs, "rtol": rtol, "atol": atol,
                             "nfev": int(dense.nfev), "steps": int(len(plain.t) - 1),
                             "values": [[float(v) for v in dense.y[:, i]] for i in range(len(ts))]})
                print("%-10s %-6s rtol %.0e: %d output times, nfev %4d, steps %3d" % (name, theirs, rtol, len(ts),
                                                                                  dense.nfev, len(plain.t) - 1))
        cases.append({"name": name, "y0": list(y0), "ts": [float(t) for t in ts],
                      "reference": [[float(v) for v in ref.y[:, i]] for i in range(len(ts))], "runs": runs})
    write_cases("ode_dense_scipy.lua", "RK45 / RK23 runs with %d output times (dense output)" % N_DENSE,
                os.path.basename(__file__), cases)

if __name__ == "__main__":
    main()
