// One AdamW step over many parameters, in place (docs/KERNELS.md; torch.optim.AdamW).
// All parameters of one call are treated as one flat sequence of elements, cut into
// fixed-size pieces that the threads share, so a model with hundreds of small tensors
// pays for one parallel region, not hundreds.
#include "kernel_util.h"

#include <algorithm>

namespace {

struct Hyper {
    double lr, beta1, beta2, eps, weight_decay;
    double step_size;   // lr / (1 - beta1^t)
    double inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^t)
};

// p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step_size * m / (sqrt(v)/sqrt(bc2) + eps)
// (mhat / (sqrt(vhat) + eps) rewritten so the bias corrections are two scalars.)
template <class T>
TL_INLINE void update(T* p, const T* g, T* m, T* v, int64_t n, const Hyper& h) {
    const T decay = T(1 - h.lr * h.weight_decay);
    const T b1 = T(h.beta1), b2 = T(h.beta2), c1 = T(1 - h.beta1), c2 = T(1 - h.beta2);
    const T step = T(h.step_size), ibc2 = T(h.inv_bc2_sqrt), eps = T(h.eps);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        const T gi = g[i];
        const T mi = b1 * m[i] + c1 * gi;
        const T vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (std::sqrt(vi) * ibc2 + eps);
    }
}

template <class Isa, class T>
TL_INLINE void update_impl(T* p, const T* g, T* m, T* v, int64_t n, const Hyper& h) {
    update(p, g, m, v, n, h);
}
TL_VARIANTS(update_rows, update_impl)

struct Group {
    void *p, *m, *v;
    const void* g;
    int64_t n;
    bool f32;
};

struct Piece {
    int64_t group, begin, end;
};

// Memory-safety guards (Python checks arguments for users at the op boundary): the update
// writes through raw pointers, so dtype, shape, layout and writeability are checked here.
// The state arrays are updated in place, so they must be the caller's own memory:
// C-contiguous, writeable, the parameter's dtype and shape. No silent copies.
Group checked_group(size_t i, py::array& p, const py::array& g, py::array& m,
                    py::array& v) {
    const char* op = "adamw_step";
    const std::string where = std::string(op) + ": parameter " + std::to_string(i);
    const tl::Float k = tl::float_kind(op, "param", p);
    const py::array* arrays[] = {&p, &g, &m, &v};
    const char* names[] = {"param", "grad", "exp_avg", "exp_avg_sq"};
    for (int j = 0; j < 4; ++j) {
        const py::array& a = *arrays[j];
        tl::same_kind(op, names[j], a, k);
        if (j > 0) tl::same_shape(where.c_str(), "param", p, names[j], a);
        if (!(a.flags() & py::array::c_style))
            throw py::value_error(where + ": " + names[j] + " must be C-contiguous (shape " +
                                  tl::shape_str(a) + ")");
        if (j != 1 && !a.writeable())
            throw py::value_error(where + ": " + names[j] + " is read-only; it is updated in place");
    }
    return Group{p.mutable_data(), m.mutable_data(), v.mutable_data(), g.data(), p.size(),
                 k == tl::Float::F32};
}

// An in-place update must reach the caller's arrays: converting a list (or anything
// else) to a fresh array would update a temporary, so only real ndarrays are taken.
py::array ndarray_at(const py::sequence& seq, size_t i, const char* list) {
    py::object o = seq[i];
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string("adamw_step: ") + list + "[" + std::to_string(i) +
                             "] is a " + py::str(py::type::of(o)).cast<std::string>() +
                             ", expected a numpy array");
    return py::reinterpret_borrow<py::array>(o);
}

void adamw_step(const py::sequence& params, const py::sequence& grads, const py::sequence& exp_avgs,
                const py::sequence& exp_avg_sqs, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step) {
    const char* op = "adamw_step";
    const size_t n = params.size();
    if (grads.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n)
        throw py::value_error(std::string(op) + ": lists differ in length: params " +
                              std::to_string(n) + ", grads " + std::to_string(grads.size()) +
                              ", exp_avgs " + std::to_string(exp_avgs.size()) + ", exp_avg_sqs " +
                              std::to_string(exp_avg_sqs.size()));
    if (step < 1) throw py::value_error(std::string(op) + ": step is 1-based, got " + std::to_string(step));

    // Keep the array handles alive while the GIL is released.
    std::vector<py::array> keep;
    std::vector<Group> groups;
    for (size_t i = 0; i < n; ++i) {
        py::array p = ndarray_at(params, i, "params"), g = ndarray_at(grads, i, "grads");
        py::array m = ndarray_at(exp_avgs, i, "exp_avgs"), v = ndarray_at(exp_avg_sqs, i, "exp_avg_sqs");
        groups.push_back(checked_group(i, p, g, m, v));
        keep.insert(keep.end(), {p, g, m, v});
    }

    const int64_t kPiece = 1 << 14;
    std::vector<Piece> pieces;
    for (int64_t gi = 0; gi < int64_t(groups.size()); ++gi)
        for (int64_t b = 0; b < groups[gi].n; b += kPiece)
            pieces.push_back(Piece{gi, b, std::min(groups[gi].n, b + kPiece)});

    Hyper h{lr, beta1, beta2, eps, weight_decay, 0.0, 0.0};
    h.step_size = lr / (1.0 - std::pow(beta1, double(step)));
    h.inv_bc2_sqrt = 1.0 / std::sqrt(1.0 - std::pow(beta2, double(step)));

    py::gil_scoped_release nogil;
    tl::parallel_for(int64_t(pieces.size()), kPiece, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) {
            const Piece& pc = pieces[k];
            const Group& G = groups[pc.group];
            const int64_t len = pc.end - pc.begin;
            if (G.f32)
                update_rows(static_cast<float*>(G.p) + pc.begin,
                            static_cast<const float*>(G.g) + pc.begin,
                            static_cast<float*>(G.m) + pc.begin,
                            static_cast<float*>(G.v) + pc.begin, len, h);
            else
                update_rows(static_cast<double*>(G.p) + pc.begin,
                            static_cast<const double*>(G.g) + pc.begin,
                            static_cast<double*>(G.m) + pc.begin,
                            static_cast<double*>(G.v) + pc.begin, len, h);
        }
    });
}

}  // namespace

void bind_adamw(py::module_& m) {
    m.def("adamw_step", &adamw_step, py::arg("params"), py::arg("grads"), py::arg("exp_avgs"),
          py::arg("exp_avg_sqs"), py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
          py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
          "One AdamW step over lists of arrays, in place (torch.optim.AdamW formula)");
}
