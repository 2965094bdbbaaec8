// The Python boundary of the attention kernels (attention.cpp): argument checks, dtype
// dispatch, strided views of the caller's arrays, GIL release.
#include "attention.h"

namespace tl::attn {
namespace {

// Memory-safety guards (Python checks arguments for users at the op boundary): the kernels
// index q, k, v, o, do, lse and the mask by the shapes, dtype and strides checked below.
py::array as_array(const char* op, const char* name, const py::handle& obj) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(op) + ": " + name + " must be a numpy array, got " +
                             py::str(py::type::of(obj)).cast<std::string>());
    return py::reinterpret_borrow<py::array>(obj);
}

// Strides in elements; an array whose strides are not whole elements is copied first.
template <typename T>
View4<T> view_of(py::array& a) {
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.strides(i) % (py::ssize_t)sizeof(T) != 0) {
            a = py::array::ensure(a, py::array::c_style);
            break;
        }
    View4<T> v;
    v.p = static_cast<const T*>(a.data());
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        v.s[i] = a.shape(i) == 1 ? 0 : a.strides(i) / (py::ssize_t)sizeof(T);
    return v;
}

struct Checked {
    long B, H, Tq, Tk, D;
    bool f64;
};

Checked check_inputs(const char* op, const py::array& q, const py::array& k, const py::array& v,
                     const py::object& mask) {
    if (q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4)
        throw py::value_error(std::string(op) + ": q, k, v must be 4-D (B, H, T, D), got q " +
                              shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
    Checked c{(long)q.shape(0), (long)q.shape(1), (long)q.shape(2), (long)k.shape(2),
              (long)q.shape(3), false};
    if (k.shape(0) != c.B || k.shape(1) != c.H || k.shape(3) != c.D || v.shape(0) != c.B ||
        v.shape(1) != c.H || v.shape(2) != c.Tk || v.shape(3) != c.D)
        throw py::value_error(std::string(op) + ": expected k and v of shape (" +
                              std::to_string(c.B) + ", " + std::to_string(c.H) + ", Tk, " +
                              std::to_string(c.D) + ") to match q " + shape_str(q) + ", got k " +
                              shape_str(k) + ", v " + shape_str(v));
    const bool f32 = q.dtype().equal(py::dtype::of<float>());
    c.f64 = q.dtype().equal(py::dtype::of<double>());
    if ((!f32 && !c.f64) || !k.dtype().equal(q.dtype()) || !v.dtype().equal(q.dtype()))
        throw py::type_error(std::string(op) +
                             ": q, k, v must all be float32 or all float64, got " + dtype_str(q) +
                             ", " + dtype_str(k) + ", " + dtype_str(v));
    if (!mask.is_none()) {
        py::array m = as_array(op, "mask", mask);
        if (m.ndim() != 4 || (m.shape(0) != 1 && m.shape(0) != c.B) ||
            (m.shape(1) != 1 && m.shape(1) != c.H) || (m.shape(2) != 1 && m.shape(2) != c.Tq) ||
            m.shape(3) != c.Tk)
            throw py::value_error(std::string(op) + ": mask of shape " + shape_str(m) +
                                  " does not broadcast as (1|" + std::to_string(c.B) + ", 1|" +
                                  std::to_string(c.H) + ", 1|" + std::to_string(c.Tq) + ", " +
                                  std::to_string(c.Tk) + ") for q " + shape_str(q) + ", k " +
                                  shape_str(k));
        if (!m.dtype().equal(q.dtype()))
            throw py::type_error(std::string(op) + ": mask must be an additive float mask of q's "
                                 "dtype " + dtype_str(q) + ", got " + dtype_str(m));
    }
    return c;
}

// The problem of one call. view_of may replace the mask by a copy: mask_keep holds the array
// the view points into for as long as the kernels run.
template <typename T>
Problem<T> problem_of(const Checked& c, const py::object& mask, py::array& mask_keep, bool causal,
                      double scale) {
    Problem<T> pb = make_problem<T>(c.B, c.H, c.Tq, c.Tk, c.D, causal, scale);
    if (!mask.is_none()) {
        mask_keep = py::reinterpret_borrow<py::array>(mask);
        pb.mask = view_of<T>(mask_keep);
    }
    return pb;
}

template <typename T>
py::tuple forward_typed(const Checked& c, py::array q, py::array k, py::array v, py::object mask,
                        bool causal, double scale) {
    py::array mk;
    Problem<T> pb = problem_of<T>(c, mask, mk, causal, scale);
    View4<T> qv = view_of<T>(q), kv = view_of<T>(k), vv = view_of<T>(v);
    // o takes q's layout: when q is a (B, T, H, D) array seen as (B, H, T, D) -- heads side by
    // side in each row, as a packed qkv projection makes them -- o is written that way too, and
    // merging its heads back into (B, T, H*D) costs the caller no copy. (PyTorch's SDPA does
    // the same.) Any other q gives a C-contiguous o.
    const bool bthd = c.H > 1 && c.Tq > 1 && qv.s[1] < qv.s[2];
    py::array_t<T> o_buf(bthd ? std::vector<py::ssize_t>{c.B, c.Tq, c.H, c.D}
                              : std::vector<py::ssize_t>{c.B, c.H, c.Tq, c.D});
    if (bthd) pb.ob = c.Tq * c.H * c.D, pb.oh = c.D, pb.ot = c.H * c.D;
    py::array_t<T> lse({c.B, c.H, c.Tq});
    T* op = o_buf.mutable_data();
    T* lp = lse.mutable_data();
    {
        py::gil_scoped_release nogil;
        run_forward(pb, qv, kv, vv, op, lp);
    }
    py::object o = bthd ? o_buf.attr("transpose")(0, 2, 1, 3) : py::object(o_buf);
    return py::make_tuple(o, lse);
}

// Whether q, k and v are the q | k | v thirds of one C-contiguous (B, T, 3, H, D) array (a
// packed qkv projection split into heads), seen as (B, H, T, D).
template <typename T>
bool packed_qkv(const Checked& c, const py::array& q, const py::array& k, const py::array& v) {
    const py::ssize_t it = sizeof(T), part = c.H * c.D * it, row = 3 * part;
    if (c.Tq != c.Tk || c.B < 1 || c.H < 2 || c.Tq < 2 || c.D < 1) return false;
    const char* base = static_cast<const char*>(q.data());
    if (static_cast<const char*>(k.data()) != base + part ||
        static_cast<const char*>(v.data()) != base + 2 * part)
        return false;
    for (const py::array* a : {&q, &k, &v})
        if (a->strides(0) != c.Tq * row || a->strides(1) != c.D * it || a->strides(2) != row ||
            a->strides(3) != it)
            return false;
    return true;
}

template <typename T>
py::tuple backward_typed(const Checked& c, py::array q, py::array k, py::array v, py::array o,
                         py::array lse, py::array dout, py::object mask, bool causal,
                         double scale) {
    py::array mk;
    Problem<T> pb = problem_of<T>(c, mask, mk, causal, scale);
    View4<T> qv = view_of<T>(q), kv = view_of<T>(k), vv = view_of<T>(v);
    View4<T> ov = view_of<T>(o), lv = view_of<T>(lse), dv_ = view_of<T>(dout);
    if (packed_qkv<T>(c, q, k, v)) {
        // q, k, v are the three parts of one (B, T, 3, H, D) projection: the gradients are
        // written into one array of that layout, returned as three (B, H, T, D) views of it,
        // so the caller's packed gradient is that array (ops/fused.py), with no copy.
        py::array_t<T> g({c.B, c.Tq, long(3), c.H, c.D});
        const long row = 3 * c.H * c.D;
        pb.qgb = pb.kgb = c.Tq * row, pb.qgh = pb.kgh = c.D, pb.qgt = pb.kgt = row;
        T* gp = g.mutable_data();
        {
            py::gil_scoped_release nogil;
            run_backward(pb, qv, kv, vv, ov, lv, dv_, gp, gp + c.H * c.D, gp + 2 * c.H * c.D);
        }
        const py::ssize_t it = sizeof(T);
        auto part = [&](int i) {
            return py::array_t<T>({c.B, c.H, c.Tq, c.D},
                                  {c.Tq * row * it, c.D * it, row * it, it}, gp + i * c.H * c.D, g);
        };
        return py::make_tuple(part(0), part(1), part(2));
    }
    py::array_t<T> dq({c.B, c.H, c.Tq, c.D});
    py::array_t<T> dk({c.B, c.H, c.Tk, c.D});
    py::array_t<T> dv({c.B, c.H, c.Tk, c.D});
    T* dqp = dq.mutable_data();
    T* dkp = dk.mutable_data();
    T* dvp = dv.mutable_data();
    {
        py::gil_scoped_release nogil;
        run_backward(pb, qv, kv, vv, ov, lv, dv_, dqp, dkp, dvp);
    }
    return py::make_tuple(dq, dk, dv);
}

py::tuple attention_forward(py::object q_, py::object k_, py::object v_, py::object mask,
                            bool is_causal, double scale) {
    const char* op = "attention_forward";
    py::array q = as_array(op, "q", q_), k = as_array(op, "k", k_), v = as_array(op, "v", v_);
    Checked c = check_inputs(op, q, k, v, mask);
    return c.f64 ? forward_typed<double>(c, q, k, v, mask, is_causal, scale)
                 : forward_typed<float>(c, q, k, v, mask, is_causal, scale);
}

py::tuple attention_backward(py::object q_, py::object k_, py::object v_, py::object o_,
                             py::object lse_, py::object do_, py::object mask, bool is_causal,
                             double scale) {
    const char* op = "attention_backward";
    py::array q = as_array(op, "q", q_), k = as_array(op, "k", k_), v = as_array(op, "v", v_);
    py::array o = as_array(op, "o", o_), lse = as_array(op, "lse", lse_);
    py::array dout = as_array(op, "do", do_);
    Checked c = check_inputs(op, q, k, v, mask);
    const bool same = o.ndim() == 4 && dout.ndim() == 4 && lse.ndim() == 3 &&
                      o.shape(0) == c.B && o.shape(1) == c.H && o.shape(2) == c.Tq &&
                      o.shape(3) == c.D && dout.shape(0) == c.B && dout.shape(1) == c.H &&
                      dout.shape(2) == c.Tq && dout.shape(3) == c.D && lse.shape(0) == c.B &&
                      lse.shape(1) == c.H && lse.shape(2) == c.Tq;
    if (!same)
        throw py::value_error(std::string(op) + ": expected o and do of shape " + shape_str(q) +
                              " and lse of shape (" + std::to_string(c.B) + ", " +
                              std::to_string(c.H) + ", " + std::to_string(c.Tq) + ") for q " +
                              shape_str(q) + ", got o " + shape_str(o) + ", do " +
                              shape_str(dout) + ", lse " + shape_str(lse));
    if (!o.dtype().equal(q.dtype()) || !dout.dtype().equal(q.dtype()) ||
        !lse.dtype().equal(q.dtype()))
        throw py::type_error(std::string(op) + ": o, do and lse must have q's dtype " +
                             dtype_str(q) + ", got " + dtype_str(o) + ", " + dtype_str(dout) +
                             ", " + dtype_str(lse));
    return c.f64 ? backward_typed<double>(c, q, k, v, o, lse, dout, mask, is_causal, scale)
                 : backward_typed<float>(c, q, k, v, o, lse, dout, mask, is_causal, scale);
}

}  // namespace
}  // namespace tl::attn

void bind_attention(py::module_& m) {
    using namespace tl::attn;
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("mask"), py::arg("is_causal"), py::arg("scale"),
          "Flash-style attention forward -> (o, lse); see docs/KERNELS.md.");
    m.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("o"), py::arg("lse"), py::arg("do"), py::arg("mask"), py::arg("is_causal"),
          py::arg("scale"), "Flash-style attention backward -> (dq, dk, dv); see docs/KERNELS.md.");
}
