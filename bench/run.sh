#!/bin/sh
# bench/run.sh — `make bench`: the same work in cunet (bench/bench.lua) and in PyTorch
# (bench/bench_torch.py), run under one environment in one invocation, printed as one table.
#
#   make bench                          # or: sh bench/run.sh
#   BENCH_THREADS=1 make bench          # thread count for both sides (default 2)
#   BENCH_ROUNDS=1 make bench           # one round only (default 3: sides alternate, best kept)
#   BENCH_FILTER=conv3x3 make bench     # only the cases whose key contains the string
#   BENCH_KEEP=dir make bench           # keep the raw per-side TSV files in dir
#
# Both sides see the same environment: OPENBLAS_CORETYPE (or its absence), GOMP_SPINCOUNT and
# whatever else the caller exports, OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to the thread
# count, and OMP_WAIT_POLICY as the caller set it or else passive (what ./cunet picks for itself).
# See bench/README.md and docs/benchmarks.md.
set -e
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
if ! "$PY" -c "import torch" > /dev/null 2>&1; then
    echo "bench: PyTorch is not importable by $PY, and make bench compares against it." >&2
    echo "bench: install Debian's build:  sudo apt-get install python3-torch" >&2
    echo "bench:   (or: CUNET_DEPS_PYTHON=1 make deps), then run make bench again." >&2
    exit 1
fi
if [ ! -x ./cunet ]; then
    echo "bench: ./cunet is missing; run make first." >&2
    exit 1
fi

THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
export BENCH_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
# ./cunet runs with OMP_WAIT_POLICY=passive unless the caller chose a policy (engine/main.c
# re-executes itself with it: spinning OpenMP workers starve OpenBLAS's threads). Give torch the
# same policy, or the two sides would not run under one environment.
if [ -n "$OMP_WAIT_POLICY" ]; then
    policy_note="$OMP_WAIT_POLICY (from the caller)"
else
    export OMP_WAIT_POLICY=passive
    policy_note="passive (set by bench/run.sh for both sides, as ./cunet does for itself when unset)"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cunet-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# Which OpenBLAS kernel the cunet process loads (torch's is read through ctypes in its script).
core_cunet=$(OPENBLAS_VERBOSE=2 ./cunet -e '' 2>&1 | sed -n 's/^Core: //p' | head -n 1)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
start=$(date +%s)

echo "bench: $ROUNDS round(s), $THREADS thread(s); progress below, the table at the end" >&2
r=1
while [ "$r" -le "$ROUNDS" ]; do
    # alternate which side goes first, so slow drifts in machine load hit both alike
    if [ $((r % 2)) -eq 1 ]; then order="cunet torch"; else order="torch cunet"; fi
    for side in $order; do
        echo "bench: round $r/$ROUNDS, $side" >&2
        if [ "$side" = cunet ]; then
            ./cunet bench/bench.lua "$tmp/cunet.$r.tsv"
        else
            "$PY" bench/bench_torch.py "$tmp/torch.$r.tsv"
        fi
    done
    r=$((r + 1))
done

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - start ))
if [ -n "$BENCH_KEEP" ]; then
    mkdir -p "$BENCH_KEEP" && cp "$tmp"/*.tsv "$BENCH_KEEP"/
fi

{
    echo "# cunet vs PyTorch — $(date -u '+%Y-%m-%d %H:%M UTC'), cunet at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') (plus any uncommitted changes)"
    echo
    echo "- CPU: ${cpu:-?} ($(nproc) cores online); load average ${load_start} at start, ${load_end} at end; ${elapsed} s"
    echo "- OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; OMP_WAIT_POLICY=$policy_note; GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-(unset)}; OMP_NUM_THREADS=$OMP_NUM_THREADS; OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS"
    echo "- rounds: $ROUNDS (each case: median of >= ${BENCH_REPS:-5} timed runs after ${BENCH_WARMUP:-2} warm-ups (1 when slower than 0.5 s); with several rounds, the best median)"
} > "$tmp/header"

# Merge: for each case key (in cunet's order), each side's best median over the rounds.
# Ratios are cunet / torch (< 1: cunet faster). Rows whose key holds "by_hand" are diagnostics
# (cunet's ODE loop without the solver) and stay out of the geometric means.
awk -F '\t' -v core_cunet="${core_cunet:-?}" -v header="$tmp/header" '
function better(old, new) { if (new == "-" ) return old; if (old == "" || old == "-" || new + 0 < old + 0) return new; return old }
function ratio(a, b) { return (a == "" || a == "-" || b == "" || b == "-" || b + 0 == 0) ? "" : a / b }
function ms(v) { if (v == "" || v == "-") return "—"; if (v + 0 >= 100) return sprintf("%.0f", v); if (v + 0 >= 10) return sprintf("%.1f", v); return sprintf("%.2f", v) }
function rs(v) { return v == "" ? "—" : sprintf("%.2f", v) }
{
    side = (FILENAME ~ /\/cunet\.[0-9]+\.tsv$/) ? "c" : "t"
    if ($1 == "INFO") { info[side, $2] = $3; next }
    if ($1 != "RESULT") next
    key = $2
    if (!(key in seen)) { seen[key] = 1; if (side == "c") keys[++n] = key; else tkeys[++tn] = key }
    if (side == "c") { op[key] = $3; shape[key] = $4 }
    fwd[side, key] = better(fwd[side, key], $5)
    bwd[side, key] = better(bwd[side, key], $6)
}
END {
    while ((getline line < header) > 0) print line
    printf "- OpenBLAS core: cunet %s, torch %s\n", core_cunet, info["t", "torch_openblas_core"]
    printf "- threads: cunet %s; torch %s\n", info["c", "cunet_threads"], info["t", "torch_threads"]
    printf "- cunet %s; torch %s (%s)\n", info["c", "cunet_version"], info["t", "torch_version"], info["t", "torch_kernels"]
    print ""
    print "| op | shape | cunet fwd ms | torch fwd ms | ratio | cunet bwd ms | torch bwd ms | ratio |"
    print "|---|---|---:|---:|---:|---:|---:|---:|"
    nf = nb = 0; lf = lb = 0
    for (i = 1; i <= n; i++) {
        k = keys[i]
        rf = ratio(fwd["c", k], fwd["t", k]); rb = ratio(bwd["c", k], bwd["t", k])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", op[k], shape[k], ms(fwd["c", k]), ms(fwd["t", k]), rs(rf), ms(bwd["c", k]), ms(bwd["t", k]), rs(rb)
        if (k ~ /by_hand/) continue
        if (rf != "" && rf > 0) { lf += log(rf); nf++ }
        if (rb != "" && rb > 0) { lb += log(rb); nb++ }
    }
    print ""
    gf = nf ? exp(lf / nf) : 0; gb = nb ? exp(lb / nb) : 0; ga = (nf + nb) ? exp((lf + lb) / (nf + nb)) : 0
    printf "Geometric mean of ratios (cunet / torch, < 1 = cunet faster; ODE rows by hand left out): fwd %s over %d cases, bwd %s over %d, all %s over %d\n", \
        nf ? sprintf("%.2f", gf) : "—", nf, nb ? sprintf("%.2f", gb) : "—", nb, (nf + nb) ? sprintf("%.2f", ga) : "—", nf + nb
    k = "unet_step/n64"
    if (fwd["c", k] != "" && fwd["t", k] != "" && bwd["c", k] != "-" && bwd["t", k] != "-") {
        tc = fwd["c", k] + bwd["c", k]; tt = fwd["t", k] + bwd["t", k]
        printf "U-Net training step, total (forward + backward + Adam): cunet %s ms, torch %s ms, ratio %.2f\n", ms(tc), ms(tt), tc / tt
    }
    a = "ode_rk4/odeint"; b = "ode_rk4/by_hand"
    if (fwd["c", a] != "" && fwd["c", b] != "") {
        printf "cn.odeint overhead against the same RK4 loop written in Lua (4 steps, 16 evaluations), per step and in %%:"
        df = (fwd["c", a] - fwd["c", b]); db = (bwd["c", a] - bwd["c", b])
        printf " fwd %+.2f ms (%+.1f%%), bwd %+.2f ms (%+.1f%%), fwd+bwd %+.2f ms (%+.1f%%)", df / 4, 100 * df / fwd["c", b], \
            db / 4, 100 * db / bwd["c", b], (df + db) / 4, 100 * (df + db) / (fwd["c", b] + bwd["c", b])
        a = "ode_rk4/odeint_nograd"; b = "ode_rk4/by_hand_nograd"
        if (fwd["c", a] != "" && fwd["c", b] != "") {
            d = fwd["c", a] - fwd["c", b]
            printf ", no_grad fwd %+.2f ms (%+.1f%%)", d / 4, 100 * d / fwd["c", b]
        }
        printf "\n"
    }
    for (i = 1; i <= tn; i++) printf "(torch reported %s, which cunet did not)\n", tkeys[i]
}' "$tmp"/cunet.*.tsv "$tmp"/torch.*.tsv
