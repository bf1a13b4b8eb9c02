/* autograd.h — reverse-mode automatic differentiation on a dynamic tape.
 *
 * An op that produces `out` from inputs of which one requires grad (and while grad mode is on)
 * attaches a cn_node to out (out->node) holding: its backward function, the inputs (retained),
 * saved tensors (detached, so no reference cycles) and the op's parameters. The output owns its
 * node; the node owns its inputs, so a graph lives exactly as long as its outputs.
 *
 * What a backward needs is named by its op, beside its forward (docs/contributing.md):
 *   - parameters: a `struct <op>_args` the forward fills and the backward reads through
 *     CN_NODE_ARGS(node, struct <op>_args) — stored inline in the node, no allocation;
 *   - tensors: an enum of saved slots (`enum { CONV_SAVED_X, CONV_SAVED_W, ... }`) used with
 *     cn_node_save and node->saved[...];
 *   - ctx / ctx_free only for data that is too big for the args area or owns resources (a
 *     variable-length array, a Lua reference): the node calls ctx_free(ctx) when it dies.
 *
 * cn_backward walks the nodes in reverse topological order (its state kept per pass, so passes
 * may nest), calls each backward with grad mode off, reduces broadcast gradients back to each input's shape (in one place: cn_sum_to_shape) and
 * adds (+=) into leaves' ->grad. Unless retain_graph, the walked graph is freed afterwards: its
 * saved tensors and inputs are released and a second backward through it is an error.
 *
 * Higher order (create_graph): each node then runs its op's backward_graph instead, with grad
 * mode on: the same gradients computed with recording ops from node->inputs (never from the
 * detached saved tensors), so the gradients carry graphs of their own and can be differentiated
 * again; the walk accumulates them out of place (recorded adds). The fast backward stays the
 * path of ordinary training. An op without a backward_graph refuses create_graph by name.
 */
#ifndef CN_AUTOGRAD_H
#define CN_AUTOGRAD_H

#include <stddef.h>

#include "tensor.h"

#define CN_NODE_MAX_SAVED 6
#define CN_NODE_ARGS_SIZE 128 /* bytes of inline parameters per node (CN_NODE_ARGS) */

typedef struct cn_node cn_node;

/* Computes the gradient of each input that requires grad from gout (the gradient of the node's
 * output): grad_in[i] receives a new reference, or stays NULL for inputs that need none. The
 * result may have the broadcast shape; the engine sums it to the input's shape. Returns 0 / -1. */
typedef int (*cn_backward_fn)(cn_node *node, const cn_tensor *gout, cn_tensor **grad_in, cn_error *err);

/* One entry of the op table: a differentiable op's name, its backward (a fast kernel, grad mode
 * off) and its backward_graph (the same gradients from recording ops over node->inputs, run with
 * grad mode on for create_graph; it may be backward itself when that is written so; NULL: the op
 * has no differentiable backward and create_graph through it is an error naming the op). */
typedef struct cn_op_def {
    const char *name;
    cn_backward_fn backward;
    cn_backward_fn backward_graph;
} cn_op_def;

struct cn_node {
    const cn_op_def *op;
    int n_inputs;
    cn_tensor **inputs;                      /* retained */
    cn_tensor *saved[CN_NODE_MAX_SAVED];     /* retained, detached; slots named by each op's enum */
    union {
        unsigned char bytes[CN_NODE_ARGS_SIZE];
        max_align_t align;
    } args;                                  /* the op's parameters: read through CN_NODE_ARGS */
    void *ctx;                               /* op-specific data, freed with ctx_free */
    void (*ctx_free)(void *ctx);
    int out_ndim;                            /* shape of the output, for gradients of views */
    int64_t out_shape[CN_MAX_DIMS];
    bool released;                           /* true once the graph was freed by a backward */
};

/* The args area of node as a `type *` (the op's parameter struct, zeroed when the node is
 * recorded); compiling fails when type does not fit in CN_NODE_ARGS_SIZE bytes. */
#define CN_NODE_ARGS(node, type)                                                              \
    ((void)sizeof(struct {                                                                    \
        _Static_assert(sizeof(type) <= CN_NODE_ARGS_SIZE, #type " does not fit a node's args"); \
        int fits_;                                                                            \
    }),                                                                                       \
     (type *)(void *)(node)->args.bytes)

/* Whether ops record nodes now (default on). */
bool cn_grad_enabled(void);
/* Switches grad mode; returns the previous mode. Per thread. */
bool cn_set_grad_enabled(bool enabled);

/* True when grad mode is on and one of the n inputs requires grad. */
bool cn_needs_grad(int n, const cn_tensor *const *inputs);
/* Attaches a node for op to out when cn_needs_grad(inputs); *node receives it (NULL when not
 * recorded) so the caller can save tensors and parameters. Returns 0, or -1 (out of memory). */
int cn_record(cn_tensor *out, const cn_op_def *op, int n, cn_tensor *const *inputs, cn_node **node,
              cn_error *err);
/* cn_record on r, a fresh result of op over the inputs, for one-line use in op wrappers:
 * returns r, or NULL (r released, err filled) when r is NULL or recording fails. */
cn_tensor *cn_record_result(cn_tensor *r, const cn_op_def *op, int n, cn_tensor *const *inputs,
                            cn_node **node, cn_error *err);
/* Runs the expression `assign` (e.g. `r = forward(...)`) with grad mode off, so the temporaries
 * of a forward computation (contiguous copies, permutes) never enter the graph. */
#define CN_WITHOUT_GRAD(assign)                                                               \
    do {                                                                                      \
        bool cn_grad_mode_ = cn_set_grad_enabled(false);                                      \
        assign;                                                                               \
        cn_set_grad_enabled(cn_grad_mode_);                                                   \
    } while (0)
/* Saves t in slot i (one of the op's named saved slots) of node as a detached reference (no-op
 * when node is NULL). */
void cn_node_save(cn_node *node, int i, const cn_tensor *t);

/* A new tensor sharing t's storage, outside any graph (requires_grad false). New reference. */
cn_tensor *cn_detach(const cn_tensor *t, cn_error *err);
/* Sums g over broadcast dims down to shape (ndim, shape). New reference. */
cn_tensor *cn_sum_to_shape(const cn_tensor *g, int ndim, const int64_t *shape, cn_error *err);

/* Flags of cn_backward and cn_grad, or-ed together. */
enum {
    CN_RETAIN_GRAPH = 1, /* keep the walked graph for another backward */
    CN_CREATE_GRAPH = 2, /* record the backward itself (gradients with graphs, for higher order) */
    CN_ALLOW_UNUSED = 4, /* cn_grad: an input the outputs do not use gets zeros, not an error */
};

/* Backpropagates from root (grad = d loss / d root; NULL means ones for a one-element root) into
 * leaves' ->grad (accumulating). Frees the graph unless CN_RETAIN_GRAPH is in flags. Returns 0 / -1. */
int cn_backward(cn_tensor *root, const cn_tensor *grad, unsigned flags, cn_error *err);
/* Vector-Jacobian products: results[j] = sum_i grad_outputs[i]^T d outputs[i] / d inputs[j], as new
 * references, without touching any ->grad. Only nodes that lead to an input run, and only those
 * are freed (without CN_RETAIN_GRAPH): the rest of a shared graph stays usable, as in PyTorch.
 * grad_outputs may be NULL (ones for one-element outputs). An input the outputs do not depend on
 * gives an error unless CN_ALLOW_UNUSED (then a zero tensor). With CN_CREATE_GRAPH the results
 * have graphs (see above). Returns 0 / -1. */
int cn_grad(int n_out, cn_tensor *const *outputs, cn_tensor *const *grad_outputs, int n_in,
            cn_tensor *const *inputs, cn_tensor **results, unsigned flags, cn_error *err);
/* Frees a node (called when its output tensor dies). */
void cn_node_free(cn_node *node);

#endif
