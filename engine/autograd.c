/* autograd.c — the tape: recording nodes, the backward walk, vector-Jacobian products. */
#include "autograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "profile.h"

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
/* All state of one pass lives in a table local to the pass (never in the nodes), so a backward
 * may run inside another one — a custom Lua backward calling cn.autograd.grad, as the ODE adjoint
 * does — without the two disturbing each other. */

typedef struct {
    cn_node *node;
    cn_tensor *grad;  /* gradient accumulated for the node's output */
    bool stop;        /* a captured non-leaf input: its gradient is taken when the walk reaches it */
    bool needed;      /* must run: backward mode, or it leads to a captured input */
    bool ran;         /* its backward ran (only such nodes are freed, as in PyTorch) */
} pass_entry;

typedef struct {
    pass_entry *slots;
    size_t cap, count;  /* open addressing, cap a power of two */
    cn_node **order;    /* DFS post-order: inputs before the nodes that use them */
    size_t len, order_cap;
} pass;

static size_t slot_of(const pass *p, const cn_node *n) {
    return (size_t)(((uintptr_t)n >> 4) * 0x9E3779B97F4A7C15ull) & (p->cap - 1);
}

static pass_entry *pass_find(const pass *p, const cn_node *n) {
    if (!p->cap) return NULL;
    for (size_t i = slot_of(p, n);; i = (i + 1) & (p->cap - 1)) {
        if (p->slots[i].node == n) return &p->slots[i];
        if (!p->slots[i].node) return NULL;
    }
}

static pass_entry *pass_insert(pass *p, cn_node *n) {
    if (2 * (p->count + 1) > p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        pass_entry *old = p->slots;
        size_t old_cap = p->cap;
        p->slots = calloc(cap, sizeof *p->slots);
        if (!p->slots) {
            p->slots = old;
            return NULL;
        }
        p->cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].node) continue;
            size_t j = slot_of(p, old[i].node);
            while (p->slots[j].node) j = (j + 1) & (cap - 1);
            p->slots[j] = old[i];
        }
        free(old);
    }
    size_t i = slot_of(p, n);
    while (p->slots[i].node) i = (i + 1) & (p->cap - 1);
    p->slots[i].node = n;
    p->count++;
    return &p->slots[i];
}

static int order_push(pass *p, cn_node *n) {
    if (p->len == p->order_cap) {
        size_t cap = p->order_cap ? 2 * p->order_cap : 64;
        cn_node **items = realloc(p->order, cap * sizeof *items);
        if (!items) return -1;
        p->order = items;
        p->order_cap = cap;
    }
    p->order[p->len++] = n;
    return 0;
}

static void pass_free(pass *p) {
    for (size_t i = 0; i < p->cap; i++) cn_release(p->slots[i].grad);
    free(p->slots);
    free(p->order);
}

/* Adds g into *slot (a gradient accumulator), taking a private copy the first time. A gradient
 * with a graph (create_graph) is kept as it is and summed out of place, so the sum is recorded. */
static int accumulate(cn_tensor **slot, cn_tensor *g, cn_error *err) {
    if (!*slot) {
        /* the caller's reference is the only one (it releases it after us): keep g itself */
        bool private = g->refcount == 1 && g->storage->refcount == 1 && cn_is_contiguous(g) && !g->node &&
                       !g->requires_grad;
        *slot = private || g->requires_grad ? cn_retain(g) : cn_clone(g, err);
        return *slot ? 0 : -1;
    }
    if (!(*slot)->requires_grad && !(g->requires_grad && cn_grad_enabled()))
        return cn_binary_(CN_ADD, *slot, g, err);
    cn_tensor *sum = cn_binary(CN_ADD, *slot, g, err);
    if (!sum) return -1;
    cn_release(*slot);
    *slot = sum;
    return 0;
}

typedef struct {
    int n_in;
    cn_tensor *const *inputs;
    cn_tensor **results;  /* capture slots (cn_grad), or NULL to accumulate into leaves (backward) */
} capture;

static bool is_captured_leaf(const capture *cap, const cn_tensor *t) {
    if (!cap->results || t->node) return false;
    for (int j = 0; j < cap->n_in; j++)
        if (cap->inputs[j] == t) return true;
    return false;
}

static bool is_stop_node(const capture *cap, const cn_node *n) {
    if (!cap->results) return false;
    for (int j = 0; j < cap->n_in; j++)
        if (cap->inputs[j]->node == n) return true;
    return false;
}

/* Depth-first walk from the roots: records every node once in post-order and marks which nodes
 * must run: all of them for a backward, those that lead to a captured input for cn_grad. */
static int collect(pass *p, int n_roots, cn_tensor *const *roots, const capture *cap, cn_error *err) {
    typedef struct {
        cn_node *node;
        int next;
    } frame;
    frame *stack = NULL;
    size_t depth = 0, stack_cap = 0;
    int status = 0;
    for (int r = 0; r < n_roots && !status; r++) {
        cn_node *root = roots[r]->node;
        if (!root || pass_find(p, root)) continue;
        pass_entry *e = pass_insert(p, root);
        if (!e) { status = -1; break; }
        e->stop = is_stop_node(cap, root);
        if (depth == stack_cap) {
            stack_cap = stack_cap ? 2 * stack_cap : 64;
            frame *grown = realloc(stack, stack_cap * sizeof *stack);
            if (!grown) { status = -1; break; }
            stack = grown;
        }
        stack[depth++] = (frame){root, 0};
        while (depth && !status) {
            frame *f = &stack[depth - 1];
            cn_node *n = f->node;
            pass_entry *ne = pass_find(p, n);
            if (f->next == n->n_inputs) {
                /* all inputs done: decide whether this node must run, then emit it */
                bool needed = !cap->results || n->released; /* released: run, to report it */
                for (int i = 0; i < n->n_inputs && !needed; i++) {
                    cn_tensor *in = n->inputs[i];
                    if (in->node) {
                        pass_entry *ie = pass_find(p, in->node);
                        needed = ie->needed || ie->stop;
                    } else {
                        needed = is_captured_leaf(cap, in);
                    }
                }
                ne->needed = needed;
                if (order_push(p, n)) { status = -1; break; }
                depth--;
                continue;
            }
            cn_tensor *in = n->inputs[f->next++];
            if (!in->node || pass_find(p, in->node)) continue;
            pass_entry *ce = pass_insert(p, in->node);
            if (!ce) { status = -1; break; }
            ce->stop = is_stop_node(cap, in->node);
            if (depth == stack_cap) {
                stack_cap *= 2;
                frame *grown = realloc(stack, stack_cap * sizeof *stack);
                if (!grown) { status = -1; break; }
                stack = grown;
            }
            stack[depth++] = (frame){in->node, 0};
        }
    }
    free(stack);
    if (status && !err->msg[0]) cn_error_set(err, "backward: out of memory");
    return status;
}

/* Frees the saved tensors and inputs of every node whose backward ran (two passes: nodes may die
 * with the tensors they hold). Nodes the walk only passed by keep their graph, as in PyTorch. */
static void free_graph(pass *p) {
    size_t count = 0;
    for (size_t k = 0; k < p->len; k++) count += (size_t)p->order[k]->n_inputs + CN_NODE_MAX_SAVED;
    cn_tensor **doomed = malloc((count ? count : 1) * sizeof *doomed);
    if (!doomed) return; /* out of memory: keep the graph; it dies with its outputs */
    size_t d = 0;
    for (size_t k = 0; k < p->len; k++) {
        cn_node *n = p->order[k];
        if (!pass_find(p, n)->ran) continue;
        for (int i = 0; i < CN_NODE_MAX_SAVED; i++) {
            if (n->saved[i]) doomed[d++] = n->saved[i];
            n->saved[i] = NULL;
        }
        for (int i = 0; i < n->n_inputs; i++) doomed[d++] = n->inputs[i];
        n->n_inputs = 0;
        n->released = true;
    }
    for (size_t i = 0; i < d; i++) cn_release(doomed[i]);
    free(doomed);
}

static int capture_index(const capture *cap, const cn_tensor *t) {
    for (int j = 0; j < cap->n_in; j++)
        if (cap->inputs[j] == t) return j;
    return -1;
}

/* Routes the gradient g of tensor t (taking over the caller's reference to g): into its creator's
 * accumulator, a capture slot, or t->grad. Handing the reference over lets a gradient that
 * nothing else holds become the accumulator itself, without a copy. */
static int route(pass *p, const capture *cap, cn_tensor *t, cn_tensor *g, cn_error *err) {
    cn_tensor *r = cn_sum_to_shape(g, t->ndim, t->shape, err);
    cn_release(g);
    if (!r) return -1;
    int status = 0;
    if (t->node) {
        pass_entry *e = pass_find(p, t->node);
        if (e) status = accumulate(&e->grad, r, err);
    } else if (cap->results) {
        int j = capture_index(cap, t);
        if (j >= 0) status = accumulate(&cap->results[j], r, err);
    } else {
        status = accumulate(&t->grad, r, err);
    }
    cn_release(r);
    return status;
}

static int run_backward(int n_out, cn_tensor *const *outputs, cn_tensor *const *grad_outputs,
                        const capture *cap, unsigned flags, cn_error *err) {
    bool create_graph = flags & CN_CREATE_GRAPH;
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
    pass p = {0};
    int status = collect(&p, n_out, outputs, cap, err);
    bool previous_mode = cn_set_grad_enabled(create_graph);
    for (int i = 0; i < n_out && !status; i++) {
        cn_tensor *g = grad_outputs ? cn_retain(grad_outputs[i])
                                    : cn_full(outputs[i]->ndim, outputs[i]->shape, 1.0f, err);
        if (!g) status = -1;
        else status = route(&p, cap, outputs[i], g, err);
    }
    /* reverse post-order is topological: every consumer of a node runs before the node */
    cn_tensor *grad_in_small[8];
    for (size_t k = p.len; k-- > 0 && !status;) {
        cn_node *n = p.order[k];
        pass_entry *e = pass_find(&p, n);
        if (!e->grad) continue;
        if (e->stop) /* a captured non-leaf input: its gradient is complete now */
            for (int j = 0; j < cap->n_in && !status; j++)
                if (cap->inputs[j]->node == n) status = accumulate(&cap->results[j], e->grad, err);
        if (!e->needed || status) continue;
        if (n->released) {
            cn_error_set(err, "backward: trying to backward through the graph a second time (through '%s'); "
                         "its intermediate values were freed by the first backward — pass retain_graph=true "
                         "to the first one", n->op->name);
            status = -1;
            break;
        }
        cn_backward_fn backward = create_graph ? n->op->backward_graph : n->op->backward;
        if (!backward) {
            cn_error_set(err, "backward: create_graph is not supported through '%s' (it has no differentiable "
                         "backward yet; docs/tensor-api.md lists the ops that have one)", n->op->name);
            status = -1;
            break;
        }
        e->ran = true;
        cn_tensor **grad_in = n->n_inputs <= 8 ? grad_in_small : calloc((size_t)n->n_inputs, sizeof *grad_in);
        if (!grad_in) {
            cn_error_set(err, "backward: out of memory");
            status = -1;
            break;
        }
        memset(grad_in, 0, (size_t)n->n_inputs * sizeof *grad_in);
        cn_profile_push(n->op->name, CN_PROFILE_BACKWARD);
        int failed = backward(n, e->grad, grad_in, err);
        cn_profile_pop();
        if (failed) {
            char msg[CN_ERROR_LEN];
            snprintf(msg, sizeof msg, "%s", err->msg);
            cn_error_set(err, "backward of %s: %s", n->op->name, msg);
            status = -1;
        }
        cn_release(e->grad); /* done with it: free memory as the walk goes */
        e->grad = NULL;
        for (int i = 0; i < n->n_inputs; i++) {
            cn_tensor *in = n->inputs[i];
            if (!status && grad_in[i] && in->requires_grad) status = route(&p, cap, in, grad_in[i], err);
            else cn_release(grad_in[i]);
        }
        if (grad_in != grad_in_small) free(grad_in);
    }
    cn_set_grad_enabled(previous_mode);
    if (!(flags & CN_RETAIN_GRAPH)) free_graph(&p);
    pass_free(&p);
    return status;
}

int cn_backward(cn_tensor *root, const cn_tensor *grad, unsigned flags, cn_error *err) {
    cn_error local;
    if (!err) err = &local;
    err->msg[0] = 0;
    capture cap = {0, NULL, NULL};
    cn_tensor *g = (cn_tensor *)grad;
    return run_backward(1, &root, grad ? &g : NULL, &cap, flags, err);
}

int cn_grad(int n_out, cn_tensor *const *outputs, cn_tensor *const *grad_outputs, int n_in,
            cn_tensor *const *inputs, cn_tensor **results, unsigned flags, cn_error *err) {
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
    int status = run_backward(n_out, outputs, grad_outputs, &cap, flags, err);
    for (int j = 0; j < n_in && !status; j++) {
        if (results[j]) continue;
        if (!(flags & CN_ALLOW_UNUSED)) {
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
