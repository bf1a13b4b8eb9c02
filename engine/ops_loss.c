/* ops_loss.c — losses: mse, l1, cross entropy (forward and backward), as torch.nn.functional.
 *
 *   mse  l_i = (x_i - t_i)^2          dl_i/dx_i = 2 (x_i - t_i)      (= -dl_i/dt_i)
 *   l1   l_i = |x_i - t_i|            dl_i/dx_i = sign(x_i - t_i)    (0 at x = t, as torch)
 *   reduction: none keeps l, sum adds, mean divides the sum by the number of elements.
 *
 * cross entropy over logits x [N, C, d...] (class dim 1; [C] is one sample), with logp =
 * log_softmax(x) along the class dim and eps = label_smoothing; per position (n, d...):
 *   class ids   t:  l = -(1 - eps) w_t logp_t - (eps / C) sum_c w_c logp_c    (0 where t = ignore)
 *               dl/dx_c = p_c ((1 - eps) w_t + (eps / C) W) - (1 - eps) w_t [c = t] - (eps / C) w_c
 *               with p = exp(logp), W = sum_c w_c; mean divides by sum of w_t over non-ignored t
 *   probabilities q' = (1 - eps) q + eps / C:  l = -sum_c w_c q'_c logp_c
 *               dl/dx_c = p_c sum_c' w_c' q'_c' - w_c q'_c,   dl/dq_c = -(1 - eps) w_c logp_c
 *               mean divides by the number of positions
 * (torch's cross_entropy_loss_label_smoothing / _prob_target; w = 1 without weight.) Sums are in
 * double; per-position losses are summed serially, in order, so results do not depend on threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops.h"
#include "ops_nn.h"
#include "parallel.h"

static bool valid_reduction(cn_reduction r, const char *name, cn_error *err) {
    if (r == CN_REDUCTION_NONE || r == CN_REDUCTION_MEAN || r == CN_REDUCTION_SUM) return true;
    cn_error_set(err, "%s: unknown reduction %d", name, (int)r);
    return false;
}

/* ---- mse, l1 ------------------------------------------------------------------------------- */

static cn_tensor *pointwise_forward(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction,
                                    bool l1, cn_tensor **diff_out, cn_error *err) {
    const char *name = l1 ? "l1_loss" : "mse_loss";
    int64_t shape[CN_MAX_DIMS];
    *diff_out = NULL;
    if (!valid_reduction(reduction, name, err)) return NULL;
    if (cn_broadcast_shapes(input->ndim, input->shape, target->ndim, target->shape, shape, name, err) < 0)
        return NULL;
    cn_tensor *diff = cn_binary(CN_SUB, input, target, err);
    if (!diff) return NULL;
    const float *pd = cn_data(diff);
    size_t count = cn_numel(diff);
    cn_tensor *r;
    if (reduction == CN_REDUCTION_NONE) {
        if (!(r = cn_empty(diff->ndim, diff->shape, err))) goto fail;
        float *pr = cn_data(r);
#pragma omp parallel for schedule(static) if (count > PARALLEL_MIN)
        for (size_t i = 0; i < count; i++) pr[i] = l1 ? fabsf(pd[i]) : pd[i] * pd[i];
    } else {
        double acc = 0.0;
        for (size_t i = 0; i < count; i++) acc += l1 ? fabs((double)pd[i]) : (double)pd[i] * pd[i];
        if (reduction == CN_REDUCTION_MEAN) acc /= (double)count; /* 0/0 = NaN for no elements, as torch */
        if (!(r = cn_scalar((float)acc, err))) goto fail;
    }
    *diff_out = diff;
    return r;
fail:
    cn_release(diff);
    return NULL;
}

struct pointwise_args {
    cn_reduction reduction;
    bool l1; /* l1_loss, else mse_loss */
};
enum { POINTWISE_SAVED_DIFF }; /* x - t, of the broadcast shape */

/* gi = {gx, -gx} for the inputs that require grad; takes over the reference to gx. */
static int assign_pair(cn_node *n, cn_tensor *gx, cn_tensor **gi, cn_error *err) {
    if (n->inputs[0]->requires_grad) gi[0] = cn_retain(gx);
    if (n->inputs[1]->requires_grad && !(gi[1] = cn_unary(CN_NEG, gx, err))) {
        cn_release(gx);
        return -1;
    }
    cn_release(gx);
    return 0;
}

static int pointwise_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct pointwise_args *args = CN_NODE_ARGS(n, struct pointwise_args);
    const cn_tensor *diff = n->saved[POINTWISE_SAVED_DIFF];
    cn_reduction reduction = args->reduction;
    bool l1 = args->l1;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    cn_tensor *gx = gc ? cn_empty(diff->ndim, diff->shape, err) : NULL;
    if (!gx) {
        cn_release(gc);
        return -1;
    }
    size_t count = cn_numel(diff);
    const float *pd = cn_data(diff), *pg = cn_data(gc);
    float *px = cn_data(gx);
    bool elementwise = reduction == CN_REDUCTION_NONE;
    double s = elementwise ? 1.0 : (double)pg[0];
    if (reduction == CN_REDUCTION_MEAN) s /= (double)count;
#pragma omp parallel for schedule(static) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) {
        double d = pd[i], gi_i = elementwise ? (double)pg[i] : s;
        double dl = l1 ? (d > 0 ? 1.0 : d < 0 ? -1.0 : d == 0 ? 0.0 : d) : 2.0 * d; /* sign keeps NaN */
        px[i] = (float)(dl * gi_i);
    }
    cn_release(gc);
    return assign_pair(n, gx, gi, err);
}

/* The recorded backward (create_graph): dl(x - t) g, scaled by 1/count for the mean, where dl is
 * 2 (x - t) for mse (recorded) and sign(x - t) for l1 (constant almost everywhere). */
static int pointwise_backward_graph(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct pointwise_args *args = CN_NODE_ARGS(n, struct pointwise_args);
    const cn_tensor *diff = n->saved[POINTWISE_SAVED_DIFF];
    double scale = args->reduction == CN_REDUCTION_MEAN ? 1.0 / (double)cn_numel(diff) : 1.0;
    cn_tensor *dl = args->l1 ? cn_unary(CN_SIGN, diff, err) : cn_binary(CN_SUB, n->inputs[0], n->inputs[1], err);
    cn_tensor *scaled = dl ? cn_binary_scalar(CN_MUL, dl, (float)(args->l1 ? scale : 2.0 * scale), false, err) : NULL;
    cn_tensor *gx = scaled ? cn_binary(CN_MUL, scaled, g, err) : NULL;
    cn_release(dl), cn_release(scaled);
    return gx ? assign_pair(n, gx, gi, err) : -1;
}

static const cn_op_def op_mse = {"mse_loss", pointwise_backward, pointwise_backward_graph};
static const cn_op_def op_l1 = {"l1_loss", pointwise_backward, pointwise_backward_graph};

static cn_tensor *pointwise_loss(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction, bool l1,
                                 cn_error *err) {
    cn_tensor *r, *diff;
    CN_WITHOUT_GRAD(r = pointwise_forward(input, target, reduction, l1, &diff, err));
    cn_node *node;
    cn_tensor *ins[2] = {(cn_tensor *)input, (cn_tensor *)target};
    r = cn_record_result(r, l1 ? &op_l1 : &op_mse, 2, ins, &node, err);
    if (node) {
        *CN_NODE_ARGS(node, struct pointwise_args) = (struct pointwise_args){.reduction = reduction, .l1 = l1};
        cn_node_save(node, POINTWISE_SAVED_DIFF, diff);
    }
    cn_release(diff);
    return r;
}

cn_tensor *cn_mse_loss(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction, cn_error *err) {
    return pointwise_loss(input, target, reduction, false, err);
}

cn_tensor *cn_l1_loss(const cn_tensor *input, const cn_tensor *target, cn_reduction reduction, cn_error *err) {
    return pointwise_loss(input, target, reduction, true, err);
}

/* ---- cross entropy ------------------------------------------------------------------------- */

/* The layout [N, C, inner] of the logits and what the target is. */
typedef struct ce_plan {
    int64_t batch, classes, inner;
    bool probs;         /* target holds probabilities (same shape as the logits) */
    int class_dim;
    int out_ndim;       /* the logits' shape without the class dim: the shape of reduction none */
    int64_t out_shape[CN_MAX_DIMS];
} ce_plan;

static int ce_check(const cn_tensor *logits, const cn_tensor *target, const cn_tensor *weight,
                    cn_reduction reduction, int64_t ignore_index, double smoothing, ce_plan *pl, cn_error *err) {
    char sl[160], st[160], se[160], sw[160];
    const char *name = "cross_entropy";
    if (!valid_reduction(reduction, name, err)) return -1;
    if (logits->ndim < 1) {
        cn_error_set(err, "%s: logits must be [N, C, ...] or [C], got a 0-d tensor", name);
        return -1;
    }
    pl->class_dim = logits->ndim == 1 ? 0 : 1;
    pl->classes = logits->shape[pl->class_dim];
    pl->batch = logits->ndim == 1 ? 1 : logits->shape[0];
    pl->inner = 1;
    for (int d = 2; d < logits->ndim; d++) pl->inner *= logits->shape[d];
    if (pl->classes < 1) {
        cn_error_set(err, "%s: logits of shape %s have no classes", name,
                     cn_shape_str(sl, sizeof sl, logits->ndim, logits->shape));
        return -1;
    }
    pl->out_ndim = 0;
    for (int d = 0; d < logits->ndim; d++)
        if (d != pl->class_dim) pl->out_shape[pl->out_ndim++] = logits->shape[d];
    pl->probs = cn_same_shape(logits, target);
    if (!pl->probs) {
        const int64_t *want = pl->out_shape;
        int nw = pl->out_ndim;
        if (target->ndim != nw || (nw && memcmp(target->shape, want, (size_t)nw * sizeof *want) != 0)) {
            cn_error_set(err, "%s: target of shape %s does not match logits of shape %s (expected class ids of "
                         "shape %s, or probabilities of the logits' shape)", name,
                         cn_shape_str(st, sizeof st, target->ndim, target->shape),
                         cn_shape_str(sl, sizeof sl, logits->ndim, logits->shape),
                         cn_shape_str(se, sizeof se, nw, want));
            return -1;
        }
    }
    if (weight && !(weight->ndim == 1 && weight->shape[0] == pl->classes)) {
        cn_error_set(err, "%s: weight of shape %s does not match %lld classes (logits of shape %s)", name,
                     cn_shape_str(sw, sizeof sw, weight->ndim, weight->shape), (long long)pl->classes,
                     cn_shape_str(sl, sizeof sl, logits->ndim, logits->shape));
        return -1;
    }
    if (!(smoothing >= 0.0 && smoothing <= 1.0)) {
        cn_error_set(err, "%s: label_smoothing must be in [0, 1], got %g", name, smoothing);
        return -1;
    }
    if (pl->probs && ignore_index >= 0) {
        cn_error_set(err, "%s: ignore_index is not supported with probability targets (target of shape %s)",
                     name, cn_shape_str(st, sizeof st, target->ndim, target->shape));
        return -1;
    }
    return 0;
}

/* Checks class ids: integers in [0, C) or ignore_index. */
static int ce_check_ids(const float *t, size_t count, int64_t classes, int64_t ignore_index, cn_error *err) {
    for (size_t i = 0; i < count; i++) {
        float v = t[i];
        if (v == floorf(v) && fabsf(v) < 9e15f) {
            int64_t id = (int64_t)v;
            if (id == ignore_index || (id >= 0 && id < classes)) continue;
            cn_error_set(err, "cross_entropy: target %lld out of range for %lld classes", (long long)id,
                         (long long)classes);
        } else {
            cn_error_set(err, "cross_entropy: target %.9g is not a class id (an integer in [0, %lld))", (double)v,
                         (long long)classes);
        }
        return -1;
    }
    return 0;
}

/* Everything the forward computes and the backward reuses. */
typedef struct ce_parts {
    cn_tensor *logp;   /* [N, C, inner] contiguous */
    cn_tensor *target; /* contiguous */
    cn_tensor *weight; /* contiguous, or NULL */
    double denom;      /* divisor of the mean */
} ce_parts;

static void ce_parts_release(ce_parts *pp) {
    cn_release(pp->logp), cn_release(pp->target), cn_release(pp->weight);
    pp->logp = pp->target = pp->weight = NULL;
}

static cn_tensor *ce_forward(const cn_tensor *logits, const cn_tensor *target, const cn_tensor *weight,
                             cn_reduction reduction, int64_t ignore_index, double eps, ce_parts *pp, cn_error *err) {
    ce_plan pl;
    memset(pp, 0, sizeof *pp);
    if (ce_check(logits, target, weight, reduction, ignore_index, eps, &pl, err)) return NULL;
    double *loss = NULL;
    cn_tensor *r = NULL;
    /* class ids are copied: backward indexes with them, whatever the caller does to its tensor */
    pp->target = pl.probs ? cn_contiguous((cn_tensor *)target, err) : cn_clone(target, err);
    if (!pp->target) goto fail;
    int64_t classes = pl.classes, inner = pl.inner, positions = pl.batch * pl.inner;
    const float *pt = cn_data(pp->target);
    if (!pl.probs && ce_check_ids(pt, (size_t)positions, classes, ignore_index, err)) goto fail;
    if (weight && !(pp->weight = cn_contiguous((cn_tensor *)weight, err))) goto fail;
    if (!(pp->logp = cn_log_softmax(logits, pl.class_dim, err))) goto fail;
    const float *lp = cn_data(pp->logp), *pw = pp->weight ? cn_data(pp->weight) : NULL;
    loss = malloc((size_t)(positions ? positions : 1) * sizeof *loss);
    if (!loss) {
        cn_error_set(err, "cross_entropy: out of memory");
        goto fail;
    }
    double denom = 0.0;
    if (pl.probs) {
#pragma omp parallel for schedule(static) if (positions * classes > PARALLEL_MIN)
        for (int64_t i = 0; i < positions; i++) {
            int64_t n = i / inner, s = i % inner;
            const float *row = lp + n * classes * inner + s, *tr = pt + n * classes * inner + s;
            double acc = 0.0;
            for (int64_t c = 0; c < classes; c++) {
                double q = (1.0 - eps) * tr[c * inner] + eps / (double)classes;
                acc += (pw ? (double)pw[c] : 1.0) * q * row[c * inner];
            }
            loss[i] = -acc;
        }
        denom = (double)positions;
    } else {
#pragma omp parallel for schedule(static) if (positions * classes > PARALLEL_MIN)
        for (int64_t i = 0; i < positions; i++) {
            int64_t n = i / inner, s = i % inner, t = (int64_t)pt[i];
            if (t == ignore_index) {
                loss[i] = 0.0;
                continue;
            }
            const float *row = lp + n * classes * inner + s;
            double l = -(pw ? (double)pw[t] : 1.0) * row[t * inner];
            if (eps > 0.0) {
                double smooth = 0.0;
                for (int64_t c = 0; c < classes; c++) smooth += (pw ? (double)pw[c] : 1.0) * row[c * inner];
                l = (1.0 - eps) * l - eps / (double)classes * smooth;
            }
            loss[i] = l;
        }
        for (int64_t i = 0; i < positions; i++) {
            int64_t t = (int64_t)pt[i];
            if (t != ignore_index) denom += pw ? (double)pw[t] : 1.0;
        }
    }
    pp->denom = denom;
    if (reduction == CN_REDUCTION_NONE) {
        if (!(r = cn_empty(pl.out_ndim, pl.out_shape, err))) goto fail;
        for (int64_t i = 0; i < positions; i++) cn_data(r)[i] = (float)loss[i];
    } else {
        double acc = 0.0;
        for (int64_t i = 0; i < positions; i++) acc += loss[i];
        if (reduction == CN_REDUCTION_MEAN) acc /= denom; /* nothing counted: 0/0 = NaN, as torch */
        if (!(r = cn_scalar((float)acc, err))) goto fail;
    }
    free(loss);
    return r;
fail:
    free(loss);
    cn_release(r);
    ce_parts_release(pp);
    return NULL;
}

/* Gradients as in the header comment; inputs {logits[, target (probabilities)]} */
struct ce_args {
    cn_reduction reduction;
    bool probs; /* the target holds class probabilities (it is input 1) */
    int64_t ignore_index;
    double label_smoothing;
    double denom; /* mean's divisor */
};
enum { CE_SAVED_LOGP, CE_SAVED_TARGET, CE_SAVED_WEIGHT };

static int ce_backward(cn_node *n, const cn_tensor *g, cn_tensor **gi, cn_error *err) {
    const struct ce_args *args = CN_NODE_ARGS(n, struct ce_args);
    const cn_tensor *logp = n->saved[CE_SAVED_LOGP], *target = n->saved[CE_SAVED_TARGET],
                    *weight = n->saved[CE_SAVED_WEIGHT];
    cn_reduction reduction = args->reduction;
    int64_t ignore_index = args->ignore_index;
    bool probs = args->probs;
    double eps = args->label_smoothing, denom = args->denom;
    int class_dim = logp->ndim == 1 ? 0 : 1;
    int64_t classes = logp->shape[class_dim], inner = 1;
    for (int d = 2; d < logp->ndim; d++) inner *= logp->shape[d];
    int64_t positions = (int64_t)(cn_numel(logp) / (size_t)classes);
    bool need_x = n->inputs[0]->requires_grad, need_t = probs && n->n_inputs > 1 && n->inputs[1]->requires_grad;
    cn_tensor *gc = cn_contiguous((cn_tensor *)g, err);
    if (!gc) return -1;
    if ((need_x && !(gi[0] = cn_empty(logp->ndim, logp->shape, err))) ||
        (need_t && !(gi[1] = cn_empty(logp->ndim, logp->shape, err)))) {
        cn_release(gc);
        return -1;
    }
    const float *lp = cn_data(logp), *pt = cn_data(target), *pw = weight ? cn_data(weight) : NULL;
    const float *pg = cn_data(gc);
    float *gx = need_x ? cn_data(gi[0]) : NULL, *gt = need_t ? cn_data(gi[1]) : NULL;
    double wsum = 0.0; /* W = sum_c w_c, for the smoothing term */
    for (int64_t c = 0; c < classes; c++) wsum += pw ? (double)pw[c] : 1.0;
    double s_all = reduction == CN_REDUCTION_NONE ? 0.0 : (double)pg[0];
    if (reduction == CN_REDUCTION_MEAN) s_all /= denom;
    double uniform = eps / (double)classes;
#pragma omp parallel for schedule(static) if (positions * classes > PARALLEL_MIN)
    for (int64_t i = 0; i < positions; i++) {
        int64_t nn = i / inner, si = i % inner;
        size_t base = (size_t)(nn * classes * inner + si);
        const float *row = lp + base;
        double s = reduction == CN_REDUCTION_NONE ? (double)pg[i] : s_all;
        if (probs) {
            const float *tr = pt + base;
            double wq = 0.0; /* sum_c w_c q'_c */
            for (int64_t c = 0; c < classes; c++)
                wq += (pw ? (double)pw[c] : 1.0) * ((1.0 - eps) * tr[c * inner] + uniform);
            for (int64_t c = 0; c < classes; c++) {
                size_t at = base + (size_t)(c * inner);
                double w = pw ? (double)pw[c] : 1.0, q = (1.0 - eps) * tr[c * inner] + uniform;
                if (gx) gx[at] = (float)(s * (exp((double)row[c * inner]) * wq - w * q));
                if (gt) gt[at] = (float)(s * -(1.0 - eps) * w * row[c * inner]);
            }
            continue;
        }
        if (!gx) continue;
        int64_t t = (int64_t)pt[i];
        if (t == ignore_index) {
            for (int64_t c = 0; c < classes; c++) gx[base + (size_t)(c * inner)] = 0.0f;
            continue;
        }
        double wt = (1.0 - eps) * (pw ? (double)pw[t] : 1.0);
        double pcoef = eps > 0.0 ? wt + uniform * wsum : wt; /* eps = 0: skip the term (w may hold inf) */
        for (int64_t c = 0; c < classes; c++) {
            double v = exp((double)row[c * inner]) * pcoef - (c == t ? wt : 0.0);
            if (eps > 0.0) v -= uniform * (pw ? (double)pw[c] : 1.0);
            gx[base + (size_t)(c * inner)] = (float)(s * v);
        }
    }
    cn_release(gc);
    return 0;
}

static const cn_op_def op_cross_entropy = {"cross_entropy", ce_backward, NULL};

cn_tensor *cn_cross_entropy(const cn_tensor *logits, const cn_tensor *target, const cn_tensor *weight,
                            cn_reduction reduction, int64_t ignore_index, double label_smoothing, cn_error *err) {
    cn_tensor *r;
    ce_parts parts;
    CN_WITHOUT_GRAD(r = ce_forward(logits, target, weight, reduction, ignore_index, label_smoothing, &parts, err));
    cn_node *node;
    cn_tensor *ins[2] = {(cn_tensor *)logits, (cn_tensor *)target};
    bool probs = r && cn_same_shape(logits, target);
    r = cn_record_result(r, &op_cross_entropy, probs ? 2 : 1, ins, &node, err);
    if (node) {
        cn_node_save(node, CE_SAVED_LOGP, parts.logp);
        cn_node_save(node, CE_SAVED_TARGET, parts.target);
        cn_node_save(node, CE_SAVED_WEIGHT, parts.weight);
        *CN_NODE_ARGS(node, struct ce_args) = (struct ce_args){
            .reduction = reduction, .probs = probs, .ignore_index = ignore_index,
            .label_smoothing = label_smoothing, .denom = parts.denom};
    }
    ce_parts_release(&parts);
    return r;
}
