# bench/models.awk — the whole-model table of `make bench` (bench/run.sh calls it).
#
#   awk -F '\t' -f bench/models.awk model.cunet.*.tsv model.tuned.*.tsv model.default.*.tsv [load.*.tsv]
#
# Input files are named <pass>.<side>.<round>.tsv: pass "model" (quiet) or "load" (one busy core
# beside the bench), side "cunet", "tuned" (PyTorch at its best) or "default" (PyTorch as it
# starts). Lines: "MODEL key label case shape ms fwd_ms bwd_ms macs params trainable" (macs from
# cunet's efficiency.count_ops, "-" on the PyTorch side) and "INFO name value". Each side keeps its
# best median over the rounds. GFLOP/s = 2 × MACs (× 3 for a training step) / time; % peak is
# against the SGEMM rate cunet measured at the start (cn.matmul 2048³, best of 5).

function better(old, new) { if (new == "-" || new == "") return old; if (old == "" || new + 0 < old + 0) return new; return old }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "" : a / b }
function ms(v) { if (v == "") return "—"; if (v + 0 >= 1000) return commas(sprintf("%.0f", v)); if (v + 0 >= 100) return sprintf("%.0f", v); if (v + 0 >= 10) return sprintf("%.1f", v); return sprintf("%.2f", v) }
function rs(v) { return v == "" ? "—" : sprintf("%.2f", v) }
function commas(s,    out) {
    s = s ""
    out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    return s out
}
function gflops(k, v) { return (v == "" || macs[k] == "" || macs[k] == "-") ? "" : 2 * factor[k] * macs[k] / (v * 1e6) }
function gs(v) { return v == "" ? "—" : sprintf("%.0f", v) }
function pct(v) { return (v == "" || peak == "") ? "—" : sprintf("%.0f%%", 100 * v / peak) }
function geo(sum, n) { return n ? sprintf("%.2f", exp(sum / n)) : "—" }

{
    n = split(FILENAME, path, "/")
    split(path[n], part, ".")
    side = part[1] "." part[2] # model.cunet, model.tuned, model.default, load.cunet, load.tuned
    if ($1 == "INFO") {
        if ($2 == "sgemm_gflops") { if (side == "model.cunet" && $3 + 0 > peak + 0) peak = $3 }
        else info[side, $2] = $3
        next
    }
    if ($1 != "MODEL") next
    key = $2
    if (!(key in seen)) { seen[key] = 1; keys[++nk] = key }
    if (part[2] == "cunet") { label[key] = $3; what[key] = $4; shape[key] = $5; macs[key] = $9 }
    factor[key] = ($4 == "train step") ? 3 : 1
    t[side, key] = better(t[side, key], $6)
    params[part[2], key] = $10
    trainable[part[2], key] = $11
    if (side == "load.cunet" || side == "load.tuned") loaded = 1
}

function counts(k,    c, p) {
    c = commas(params["cunet", k]) " / " commas(params["tuned", k])
    if (params["cunet", k] != params["tuned", k] || trainable["cunet", k] != trainable["tuned", k]) c = c " **MISMATCH**"
    return c
}

END {
    printf "- SGEMM peak (cn.matmul 2048³, best of 5, cunet's threads): %s GFLOP/s\n", peak == "" ? "—" : sprintf("%.0f", peak)
    printf "- threads: cunet %s; torch tuned %s, %s; torch default %s, %s (%s)\n", info["model.cunet", "cunet_threads"], \
        info["model.tuned", "torch_threads"], info["model.tuned", "torch_allocator"], info["model.default", "torch_threads"], \
        info["model.default", "torch_allocator"], info["model.tuned", "torch_kernels"]
    print "- GFLOP/s: 2 × MACs of one forward (efficiency.count_ops of the cunet model, per sample × batch); a training step counts 3 × the forward (backward ≈ 2 × forward; Adam not counted). % peak: of the SGEMM peak above"
    print "- parameters: total, cunet / torch (asserted equal when the PyTorch twin is built, trainable counts too)"
    print ""
    head = "| model | parameters | case | shape | cunet ms | torch tuned ms | ratio | torch default ms | ratio | cunet GFLOP/s | % peak | torch tuned GFLOP/s | % peak |"
    rule = "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if (loaded) { head = head " loaded: cunet ms | torch tuned ms | ratio |"; rule = rule "---:|---:|---:|" }
    print head
    print rule
    nt = nd = nl = 0; lt = ld = ll = 0
    for (i = 1; i <= nk; i++) {
        k = keys[i]
        c = t["model.cunet", k]; tt = t["model.tuned", k]; td = t["model.default", k]
        rt = ratio(c, tt); rd = ratio(c, td)
        first = (label[k] != last_label)
        last_label = label[k]
        row = sprintf("| %s | %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s |", first ? label[k] : "", \
            first ? counts(k) : "", what[k], shape[k], ms(c), ms(tt), rs(rt), ms(td), rs(rd), \
            gs(gflops(k, c)), pct(gflops(k, c)), gs(gflops(k, tt)), pct(gflops(k, tt)))
        if (rt != "") { lt += log(rt); nt++ }
        if (rd != "") { ld += log(rd); nd++ }
        if (loaded) {
            lc = t["load.cunet", k]; lto = t["load.tuned", k]; rl = ratio(lc, lto)
            row = row sprintf(" %s | %s | %s |", ms(lc), ms(lto), rs(rl))
            if (rl != "") { ll += log(rl); nl++ }
        }
        print row
    }
    print ""
    printf "Geometric mean of ratios (cunet / torch, < 1 = cunet faster) over %d whole-model cases: against torch tuned %s, against torch default %s", nt, geo(lt, nt), geo(ld, nd)
    if (loaded) printf "; under load, against torch tuned under load, %s over %d", geo(ll, nl), nl
    printf "\n"
}
