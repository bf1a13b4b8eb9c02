/* autograd.c — the tape: recording nodes, the backward walk, vector-Jacobian products. */
#include "autograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

static _Thread_local bool grad_mode = true;

bool cn_grad_enabled(void) { return grad_mode; }

bool cn_set_grad_enabled(bool enabled) {
    bool previous = grad_mode;
    grad_mode = enabled;
    return previous;
}

bool cn_needs_grad(int n, const cn_tensor *const *inputs) {
    if (!grad_mode) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

int cn_record(cn_tensor *out, const cn_op_def *op, int n, cn_tensor *const *inputs, cn_node **node,
              cn_error *err) {
    *node = NULL;
    if (!cn_needs_grad(n, (const cn_tensor *const *)inputs)) return 0;
    cn_node *nd = calloc(1, sizeof *nd);
    cn_tensor **in = malloc((size_t)(n ? n : 1) * sizeof *in);
    if (!nd || !in) {
        free(nd);
        free(in);
        cn_error_set(err, "%s: out of memory recording the autograd graph", op->name);
        return -1;
    }
    for (int i = 0; i < n; i++) in[i] = cn_retain(inputs[i]);
    nd->op = op;
    nd->n_inputs = n;
    nd->inputs = in;
    nd->out_ndim = out->ndim;
    memcpy(nd->out_shape, out->shape, sizeof nd->out_shape);
    out->node = nd;
    out->requires_grad = true;
    *node = nd;
    return 0;
}

cn_tensor *cn_record_result(cn_tensor *r, const cn_op_def *op, int n, cn_tensor *const *inputs,
                            cn_node **node, cn_error *err) {
    cn_node *scratch;
    if (!node) node = &scratch;
    *node = NULL;
    if (r && cn_record(r, op, n, inputs, node, err)) {
        cn_release(r);
        return NULL;
    }
    return r;
}

void cn_node_save(cn_node *node, int i, const cn_tensor *t) {
    if (!node) return;
    cn_release(node->saved[i]);
    node->saved[i] = t ? cn_detach(t, NULL) : NULL;
}

void cn_node_free(cn_node *node) {
    if (!node) return;
    if (node->ctx_free) node->ctx_free(node->ctx);
    free(node->inputs);
    free(node);
}

cn_tensor *cn_detach(const cn_tensor *t, cn_error *err) {
    return cn_as_strided((cn_tensor *)t, t->ndim, t->shape, t->stride, t->offset, err);
}

cn_tensor *cn_sum_to_shape(const cn_tensor *g, int ndim, const int64_t *shape, cn_error *err) {
    if (g->ndim == ndim && memcmp(g->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return cn_retain((cn_tensor *)g);
    int dims[CN_MAX_DIMS], n = 0, lead = g->ndim - ndim;
    if (lead < 0) {
        char a[160], b[160];
        cn_error_set(err, "autograd: gradient of shape %s cannot be reduced to shape %s",
                     cn_shape_str(a, sizeof a, g->ndim, g->shape), cn_shape_str(b, sizeof b, ndim, shape));
        return NULL;
    }
    for (int i = 0; i < g->ndim; i++)
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) dims[n++] = i;
    cn_tensor *s = n ? cn_sum(g, n, dims, true, err) : cn_retain((cn_tensor *)g);
    if (!s) return NULL;
    cn_tensor *r = cn_reshape(s, ndim, shape, err);
    cn_release(s);
    return r;
}

/* ---- the backward walk -------------------------------------------------------------------- */

typedef struct {
    cn_node **items;
    size_t len, cap;
} node_list;

static int list_push(node_list *l, cn_node *n) {
    if (l->len == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        cn_node **items = realloc(l->items, cap * sizeof *items);
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->len++] = n;
    return 0;
}

/* Adds g into *slot (a gradient accumulator), taking a private copy the first time. */
static int accumulate(cn_tensor **slot, cn_tensor *g, cn_error *err) {
    if (!*slot) {
        bool private = g->refcount == 1 && g->storage->refcount == 1 && cn_is_contiguous(g) && !g->node;
        *slot = private ? cn_retain(g) : cn_clone(g, err);
        return *slot ? 0 : -1;
    }
    return cn_binary_(CN_ADD, *slot, g, err);
}

/* Collects every node reachable from the roots and counts, per node, its consumers in the graph. */
static int collect(int n_roots, cn_tensor *const *roots, node_list *all, cn_error *err) {
    node_list stack = {0};
    int status = 0;
    for (int i = 0; i < n_roots && !status; i++) {
        cn_node *r = roots[i]->node;
        if (r && !r->pending) {
            r->pending = 1; /* visited marker during the walk; reset to a consumer count below */
            status = list_push(&stack, r) || list_push(all, r);
        }
    }
    while (!status && stack.len) {
        cn_node *n = stack.items[--stack.len];
        if (n->released) {
            cn_error_set(err, "backward: trying to backward through the graph a second time (through '%s'); "
                         "its intermediate values were freed by the first backward — pass retain_graph=true "
                         "to the first one", n->op->name);
            status = -1;
            break;
        }
        for (int i = 0; i < n->n_inputs; i++) {
            cn_node *c = n->inputs[i]->node;
            if (c && !c->pending) {
                c->pending = 1;
                if (list_push(&stack, c) || list_push(all, c)) status = -1;
            }
        }
    }
    free(stack.items);
    if (status && !err->msg[0]) cn_error_set(err, "backward: out of memory");
    for (size_t k = 0; k < all->len; k++) all->items[k]->pending = 0;
    for (size_t k = 0; k < all->len; k++) {
        cn_node *n = all->items[k];
        for (int i = 0; i < n->n_inputs; i++)
            if (n->inputs[i]->node) n->inputs[i]->node->pending++;
    }
    return status;
}

/* Frees the saved tensors and inputs of every walked node (two passes: nodes may die with them). */
static void free_graph(node_list *all) {
    size_t count = 0;
    for (size_t k = 0; k < all->len; k++) count += (size_t)all->items[k]->n_inputs + CN_NODE_MAX_SAVED;
    cn_tensor **doomed = malloc((count ? count : 1) * sizeof *doomed);
    size_t d = 0;
    for (size_t k = 0; k < all->len; k++) {
        cn_node *n = all->items[k];
        for (int i = 0; i < CN_NODE_MAX_SAVED; i++) {
            if (n->saved[i] && doomed) doomed[d++] = n->saved[i];
            else cn_release(n->saved[i]); /* no scratch array: release now (saved tensors have no nodes) */
            n->saved[i] = NULL;
        }
        for (int i = 0; i < n->n_inputs; i++) {
            if (doomed) doomed[d++] = n->inputs[i];
        }
        if (doomed) n->n_inputs = 0;
        n->released = true;
    }
    for (size_t i = 0; i < d; i++) cn_release(doomed[i]);
    free(doomed);
}

typedef struct {
    int n_in;
    cn_tensor *const *inputs;
    cn_tensor **results;  /* capture slots (cn_grad), or NULL to accumulate into leaves (backward) */
} capture;

static int capture_index(const capture *cap, const cn_tensor *t) {
    for (int j = 0; j < cap->n_in; j++)
        if (cap->inputs[j] == t) return j;
    return -1;
}

/* Routes the gradient g of input t: into its creator's accumulator, a capture slot, or t->grad. */
static int route(const capture *cap, cn_tensor *t, cn_tensor *g, cn_error *err) {
    cn_tensor *r = cn_sum_to_shape(g, t->ndim, t->shape, err);
    if (!r) return -1;
    int status;
    if (t->node) {
        status = accumulate(&t->node->grad, r, err);
    } else if (cap->results) {
        int j = capture_index(cap, t);
        status = j >= 0 ? accumulate(&cap->results[j], r, err) : 0;
    } else {
        status = accumulate(&t->grad, r, err);
    }
    cn_release(r);
    return status;
}

static int run_backward(int n_out, cn_tensor *const *outputs, cn_tensor *const *grad_outputs,
                        const capture *cap, bool retain_graph, cn_error *err) {
    for (int i = 0; i < n_out; i++) {
        if (!outputs[i]->requires_grad) {
            cn_error_set(err, "backward: output %d does not require grad and has no graph "
                         "(did you call requires_grad(true) on an input, outside no_grad?)", i + 1);
            return -1;
        }
        const cn_tensor *g = grad_outputs ? grad_outputs[i] : NULL;
        if (g && !cn_same_shape(g, outputs[i])) {
            char a[160], b[160];
            cn_error_set(err, "backward: gradient of shape %s given for an output of shape %s",
                         cn_shape_str(a, sizeof a, g->ndim, g->shape),
                         cn_shape_str(b, sizeof b, outputs[i]->ndim, outputs[i]->shape));
            return -1;
        }
        if (!g && cn_numel(outputs[i]) != 1) {
            char a[160];
            cn_error_set(err, "backward: a gradient can be created implicitly only for one-element outputs, "
                         "got shape %s (pass a gradient)",
                         cn_shape_str(a, sizeof a, outputs[i]->ndim, outputs[i]->shape));
            return -1;
        }
    }
    node_list all = {0};
    int status = collect(n_out, outputs, &all, err);
    bool previous_mode = cn_set_grad_enabled(false);
    for (int i = 0; i < n_out && !status; i++) {
        cn_tensor *g = grad_outputs ? cn_retain(grad_outputs[i])
                                    : cn_full(outputs[i]->ndim, outputs[i]->shape, 1.0f, err);
        if (!g) status = -1;
        else status = route(cap, outputs[i], g, err);
        cn_release(g);
    }
    /* Kahn's algorithm: a node runs once every consumer has added its share to node->grad */
    node_list ready = {0};
    for (size_t k = 0; k < all.len && !status; k++)
        if (all.items[k]->pending == 0 && list_push(&ready, all.items[k])) status = -1;
    cn_tensor *grad_in_small[8];
    while (!status && ready.len) {
        cn_node *n = ready.items[--ready.len];
        cn_tensor **grad_in = n->n_inputs <= 8 ? grad_in_small : calloc((size_t)n->n_inputs, sizeof *grad_in);
        if (!grad_in) {
            cn_error_set(err, "backward: out of memory");
            status = -1;
            break;
        }
        memset(grad_in, 0, (size_t)n->n_inputs * sizeof *grad_in);
        if (n->grad) {
            if (n->op->backward(n, n->grad, grad_in, err)) {
                char msg[CN_ERROR_LEN];
                snprintf(msg, sizeof msg, "%s", err->msg);
                cn_error_set(err, "backward of %s: %s", n->op->name, msg);
                status = -1;
            }
            if (cap->results) {
                /* a captured non-leaf input: its gradient is complete now */
                for (int j = 0; j < cap->n_in && !status; j++)
                    if (cap->inputs[j]->node == n) status = accumulate(&cap->results[j], n->grad, err);
            }
            cn_release(n->grad);
            n->grad = NULL;
        }
        for (int i = 0; i < n->n_inputs; i++) {
            cn_tensor *in = n->inputs[i];
            if (!status && grad_in[i] && in->requires_grad) status = route(cap, in, grad_in[i], err);
            cn_release(grad_in[i]);
            if (in->node && --in->node->pending == 0 && !status && list_push(&ready, in->node)) status = -1;
        }
        if (grad_in != grad_in_small) free(grad_in);
    }
    cn_set_grad_enabled(previous_mode);
    free(ready.items);
    for (size_t k = 0; k < all.len; k++) {
        cn_release(all.items[k]->grad);
        all.items[k]->grad = NULL;
        all.items[k]->pending = 0;
    }
    if (!retain_graph) free_graph(&all);
    free(all.items);
    return status;
}

int cn_backward(cn_tensor *root, const cn_tensor *grad, bool retain_graph, cn_error *err) {
    cn_error local;
    if (!err) err = &local;
    err->msg[0] = 0;
    capture cap = {0, NULL, NULL};
    cn_tensor *g = (cn_tensor *)grad;
    return run_backward(1, &root, grad ? &g : NULL, &cap, retain_graph, err);
}

int cn_grad(int n_out, cn_tensor *const *outputs, cn_tensor *const *grad_outputs, int n_in,
            cn_tensor *const *inputs, cn_tensor **results, bool retain_graph, bool allow_unused,
            cn_error *err) {
    cn_error local;
    if (!err) err = &local;
    err->msg[0] = 0;
    for (int j = 0; j < n_in; j++) {
        results[j] = NULL;
        if (!inputs[j]->requires_grad) {
            cn_error_set(err, "grad: input %d does not require grad", j + 1);
            return -1;
        }
    }
    capture cap = {n_in, inputs, results};
    /* an output that is itself an input contributes its grad_output directly */
    int status = run_backward(n_out, outputs, grad_outputs, &cap, retain_graph, err);
    for (int j = 0; j < n_in && !status; j++) {
        if (results[j]) continue;
        if (!allow_unused) {
            cn_error_set(err, "grad: input %d was not used to compute the outputs (pass allow_unused=true "
                         "to get zeros)", j + 1);
            status = -1;
        } else {
            results[j] = cn_zeros(inputs[j]->ndim, inputs[j]->shape, err);
            if (!results[j]) status = -1;
        }
    }
    if (status)
        for (int j = 0; j < n_in; j++) {
            cn_release(results[j]);
            results[j] = NULL;
        }
    return status;
}
