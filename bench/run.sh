#!/bin/sh
# bench/run.sh — `make bench`: the same work in cunet (bench/bench.lua) and in PyTorch
# (bench/bench_torch.py), run in one invocation, printed as markdown tables.
#
#   make bench                            # or: sh bench/run.sh
#   BENCH_FILTER=model/ make bench        # only the whole models; lone/ only the lone ops;
#                                         # any substring of the keys, several separated by commas
#   BENCH_LOAD=1 make bench               # the whole models again with one busy core beside them
#   BENCH_THREADS=1 make bench            # lone-op rows: thread count for both sides (default 2)
#   BENCH_ROUNDS=1 make bench             # lone-op rows: rounds (default 3: sides alternate, best kept)
#   BENCH_MODEL_ROUNDS=2 make bench       # whole-model rows: rounds (default 1)
#   BENCH_DEFAULT_SLOW_REPS=3 make bench  # PyTorch default: timed runs of cases over 1 s (default 1)
#   BENCH_KEEP=dir make bench             # keep the raw per-side TSV files in dir
#   CUNET=build-x/cunet sh bench/run.sh   # another cunet binary (default ./cunet)
#
# Two parts with two environments:
#   lone ops (keys lone/...): both sides under one environment: OPENBLAS_CORETYPE (or its absence),
#     GOMP_SPINCOUNT and whatever else the caller exports, OMP_NUM_THREADS and OPENBLAS_NUM_THREADS
#     set to the thread count, and OMP_WAIT_POLICY as the caller set it or else passive (what
#     ./cunet picks for itself).
#   whole models (keys model/..., bench/models.lua): each side at its best on this machine, in the
#     caller's environment: cunet as shipped (its own thread count and wait policy); PyTorch "tuned"
#     (libtcmalloc preloaded when installed, OPENBLAS_NUM_THREADS=1, torch.set_num_threads(cores))
#     and PyTorch "default" (as it starts). The ratio that counts is cunet / torch tuned.
# See bench/README.md and docs/benchmarks.md.
set -e
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
CUNET=${CUNET:-./cunet}
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 # Debian's libgoogle-perftools4
if ! "$PY" -c "import torch" > /dev/null 2>&1; then
    echo "bench: PyTorch is not importable by $PY, and make bench compares against it." >&2
    echo "bench: install Debian's build:  sudo apt-get install python3-torch" >&2
    echo "bench:   (or: CUNET_DEPS_PYTHON=1 make deps), then run make bench again." >&2
    exit 1
fi
if [ ! -x "$CUNET" ]; then
    echo "bench: $CUNET is missing; run make first." >&2
    exit 1
fi
export CUNET

THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
MODEL_ROUNDS=${BENCH_MODEL_ROUNDS:-1}
DEFAULT_SLOW_REPS=${BENCH_DEFAULT_SLOW_REPS:-1}
CORES=$(nproc)

# Which parts BENCH_FILTER selects: terms starting with model/ or lone/ name one part; any other
# term may match keys of both (each script filters its own cases).
do_lone=1
do_model=1
if [ -n "$BENCH_FILTER" ]; then
    do_lone=0
    do_model=0
    set -f
    for term in $(echo "$BENCH_FILTER" | tr ',' ' '); do
        case "$term" in
            model/*) do_model=1 ;;
            lone/*) do_lone=1 ;;
            *) do_lone=1; do_model=1 ;;
        esac
    done
    set +f
fi

# Lone ops: ./cunet runs with OMP_WAIT_POLICY=passive unless the caller chose a policy
# (cli/main.c re-executes itself with it: spinning OpenMP workers starve OpenBLAS's threads).
# Give torch the same policy there, or the two sides would not run under one environment.
if [ -n "$OMP_WAIT_POLICY" ]; then
    lone_policy=$OMP_WAIT_POLICY
    policy_note="$OMP_WAIT_POLICY (from the caller)"
else
    lone_policy=passive
    policy_note="passive (set by bench/run.sh for both sides, as ./cunet does for itself when unset)"
fi
lone() {
    env BENCH_PART=lone BENCH_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
        OMP_WAIT_POLICY="$lone_policy" "$@"
}

# Whole models: each side at its own best.
if [ -r "$TCMALLOC" ]; then
    tcmalloc_note="libtcmalloc preloaded ($TCMALLOC)"
    preload="$TCMALLOC${LD_PRELOAD:+ $LD_PRELOAD}"
else
    tcmalloc_note="libtcmalloc MISSING ($TCMALLOC; Debian: apt-get install libgoogle-perftools4): not preloaded"
    preload=${LD_PRELOAD:-}
fi
model_side() { # model_side cunet|tuned|default out.tsv
    case "$1" in
        cunet) env BENCH_PART=model "$CUNET" bench/bench.lua "$2" ;;
        tuned) env BENCH_PART=model BENCH_TORCH_SETTING=tuned OPENBLAS_NUM_THREADS=1 LD_PRELOAD="$preload" \
            "$PY" bench/bench_torch.py "$2" ;;
        # out of the box is the reference, not the target: one timed run for its cases over 1 s
        default) env BENCH_PART=model BENCH_TORCH_SETTING=default BENCH_SLOW_REPS="$DEFAULT_SLOW_REPS" \
            "$PY" bench/bench_torch.py "$2" ;;
    esac
}

spinner=
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cunet-bench.XXXXXX")
cleanup() {
    if [ -n "$spinner" ]; then kill "$spinner" 2> /dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Which OpenBLAS kernel the cunet process loads (torch's is read through ctypes in its script).
core_cunet=$(OPENBLAS_VERBOSE=2 "$CUNET" -e '' 2>&1 | sed -n 's/^Core: //p' | head -n 1)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
start=$(date +%s)

if [ "$do_lone" = 1 ]; then
    echo "bench: lone ops: $ROUNDS round(s), $THREADS thread(s); progress below, the tables at the end" >&2
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        # alternate which side goes first, so slow drifts in machine load hit both alike
        if [ $((r % 2)) -eq 1 ]; then order="cunet torch"; else order="torch cunet"; fi
        for side in $order; do
            echo "bench: lone ops, round $r/$ROUNDS, $side" >&2
            if [ "$side" = cunet ]; then
                lone "$CUNET" bench/bench.lua "$tmp/cunet.$r.tsv"
            else
                lone "$PY" bench/bench_torch.py "$tmp/torch.$r.tsv"
            fi
        done
        r=$((r + 1))
    done
fi

if [ "$do_model" = 1 ]; then
    # the models, their resolved configs and parameter counts, for the PyTorch side to build from
    "$CUNET" bench/models.lua > "$tmp/models.json"
    export BENCH_MODELS="$tmp/models.json"
    r=1
    while [ "$r" -le "$MODEL_ROUNDS" ]; do
        if [ $((r % 2)) -eq 1 ]; then order="cunet tuned default"; else order="default tuned cunet"; fi
        for side in $order; do
            echo "bench: whole models, round $r/$MODEL_ROUNDS, $side" >&2
            model_side "$side" "$tmp/model.$side.$r.tsv"
        done
        r=$((r + 1))
    done
    if [ -n "$BENCH_LOAD" ] && [ "$BENCH_LOAD" != 0 ]; then
        # one busy core beside the bench, at the bench's own priority
        nice -n 0 sh -c 'while :; do :; done' &
        spinner=$!
        for side in cunet tuned; do
            echo "bench: whole models under load (busy process $spinner), $side" >&2
            model_side "$side" "$tmp/load.$side.1.tsv"
        done
        kill "$spinner"
        wait "$spinner" 2> /dev/null || true
        spinner=
    fi
fi

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - start ))
if [ -n "$BENCH_KEEP" ]; then
    mkdir -p "$BENCH_KEEP" && cp "$tmp"/*.tsv "$BENCH_KEEP"/
fi

torch_version=$(sed -n 's/^INFO\ttorch_version\t//p' "$tmp"/*.tsv 2> /dev/null | head -n 1)
torch_core=$(sed -n 's/^INFO\ttorch_openblas_core\t//p' "$tmp"/*.tsv 2> /dev/null | head -n 1)
echo "# cunet vs PyTorch — $(date -u '+%Y-%m-%d %H:%M UTC'), cunet at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') (plus any uncommitted changes)"
echo
echo "- CPU: ${cpu:-?} ($CORES cores online); load average ${load_start} at start, ${load_end} at end; ${elapsed} s"
echo "- OpenBLAS core: cunet ${core_cunet:-?}, torch ${torch_core:-?}; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}; PyTorch ${torch_version:-?}; cunet $CUNET"

if [ "$do_lone" = 1 ] && ls "$tmp"/cunet.*.tsv > /dev/null 2>&1; then
# Merge: for each case key (in cunet's order), each side's best median over the rounds.
# Ratios are cunet / torch (< 1: cunet faster). Rows whose key holds "by_hand" are diagnostics
# (cunet's ODE loop without the solver) and stay out of the geometric means.
echo
echo "## Lone ops"
echo
echo "- OMP_WAIT_POLICY=$policy_note; GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-(unset)}; OMP_NUM_THREADS=$THREADS; OPENBLAS_NUM_THREADS=$THREADS (both sides)"
echo "- rounds: $ROUNDS (each case: median of >= ${BENCH_REPS:-5} timed runs after ${BENCH_WARMUP:-2} warm-ups (1 when slower than 0.5 s); with several rounds, the best median)"
awk -F '\t' '
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
    printf "- threads: cunet %s; torch %s (%s)\n", info["c", "cunet_threads"], info["t", "torch_threads"], info["t", "torch_kernels"]
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
    k = "lone/unet_step/n64"
    if (fwd["c", k] != "" && fwd["t", k] != "" && bwd["c", k] != "-" && bwd["t", k] != "-") {
        tc = fwd["c", k] + bwd["c", k]; tt = fwd["t", k] + bwd["t", k]
        printf "U-Net training step, total (forward + backward + Adam): cunet %s ms, torch %s ms, ratio %.2f\n", ms(tc), ms(tt), tc / tt
    }
    a = "lone/ode_rk4/odeint"; b = "lone/ode_rk4/by_hand"
    if (fwd["c", a] != "" && fwd["c", b] != "") {
        printf "cn.odeint overhead against the same RK4 loop written in Lua (4 steps, 16 evaluations), per step and in %%:"
        df = (fwd["c", a] - fwd["c", b]); db = (bwd["c", a] - bwd["c", b])
        printf " fwd %+.2f ms (%+.1f%%), bwd %+.2f ms (%+.1f%%), fwd+bwd %+.2f ms (%+.1f%%)", df / 4, 100 * df / fwd["c", b], \
            db / 4, 100 * db / bwd["c", b], (df + db) / 4, 100 * (df + db) / (fwd["c", b] + bwd["c", b])
        a = "lone/ode_rk4/odeint_nograd"; b = "lone/ode_rk4/by_hand_nograd"
        if (fwd["c", a] != "" && fwd["c", b] != "") {
            d = fwd["c", a] - fwd["c", b]
            printf ", no_grad fwd %+.2f ms (%+.1f%%)", d / 4, 100 * d / fwd["c", b]
        }
        printf "\n"
    }
    for (i = 1; i <= tn; i++) printf "(torch reported %s, which cunet did not)\n", tkeys[i]
}' "$tmp"/cunet.*.tsv "$tmp"/torch.*.tsv
fi

if [ "$do_model" = 1 ] && ls "$tmp"/model.cunet.*.tsv > /dev/null 2>&1; then
    echo
    echo "## Whole models"
    echo
    echo "- cunet as shipped (no thread or wait-policy settings from the bench; OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset: ./cunet sets passive)})"
    echo "- PyTorch tuned: $tcmalloc_note, OPENBLAS_NUM_THREADS=1, torch.set_num_threads($CORES); PyTorch default: no preload, torch's own thread settings"
    echo "- each case: median of >= ${BENCH_REPS:-5} timed runs (until 0.3 s of work; ${BENCH_SLOW_REPS:-3} for cases over 1 s, $DEFAULT_SLOW_REPS for PyTorch default) after ${BENCH_WARMUP:-2} warm-ups (1 for cases over 0.5 s); rounds: $MODEL_ROUNDS (best median)"
    if [ -n "$BENCH_LOAD" ] && [ "$BENCH_LOAD" != 0 ]; then
        echo "- under load: the same cases, cunet and PyTorch tuned, with one busy process (sh -c 'while :; do :; done', nice 0) beside them"
    fi
    set -- "$tmp"/model.cunet.*.tsv "$tmp"/model.tuned.*.tsv "$tmp"/model.default.*.tsv
    for f in "$tmp"/load.*.tsv; do
        if [ -e "$f" ]; then set -- "$@" "$f"; fi
    done
    awk -F '\t' -f bench/models.awk "$@"
fi
