// Fused CPU kernels for the DoReFa quantizers (Zhuang et al., TPAMI 2022, §3.1).
//
// Why: in plain PyTorch ops each quantizer is a chain of 5-11 elementwise passes
// (clamp, mul, round, div, compares, STE arithmetic), each reading and writing the
// whole activation; here the forward is one pass and the backward one pass.
//
// Exactness: every kernel performs, element for element, the same IEEE operations as
// the reference formulas in lowbit/quant/functional.py, each rounding once and in the
// same order (built with -ffp-contract=off, so no multiply-add is fused), so forward
// values are bitwise equal to the reference. The activation loops are in
// simd_loops.h; their bfloat16 versions (float32 arithmetic, as the reference) in
// bf16_loops.h. Reductions and tanh call the same ATen
// kernels autograd calls. Loops walk storage in memory order: callers pass dense
// tensors (is_non_overlapping_and_dense) and paired tensors with identical strides.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "bf16_loops.h"
#include "simd_loops.h"

namespace {

using lowbit::act_values;

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

const uint16_t* bf16_in(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}

uint16_t* bf16_out(at::Tensor& t) {
  return reinterpret_cast<uint16_t*>(t.mutable_data_ptr<at::BFloat16>());
}

// Elements per parallel task (128 KiB of float), as ATen's own elementwise ops use.
int64_t kGrain = 1 << 15;

int64_t set_grain(int64_t grain) {  // for experiments: returns the previous value
  const int64_t old = kGrain;
  kGrain = grain > 0 ? grain : old;
  return old;
}

void check_dense(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu(), what, " must be a CPU tensor");
  TORCH_CHECK(t.is_non_overlapping_and_dense(), what, " must be dense");
}

void check_pair(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.strides() == b.strides(),
              "paired tensors must have the same sizes and strides");
}

// y = q_k(clip(x, 0, 1)); levels = 2^k - 1, or 0 for "clip only" (k = 32).
// With with_mask, also mask = (0 <= x <= 1) as 1 byte per element (for the backward).
// x: any shape, dense; y like x; mask: bool like x (undefined without with_mask).
std::tuple<at::Tensor, at::Tensor> act_forward(const at::Tensor& x, double levels,
                                               bool with_mask) {
  check_dense(x, "x");
  auto y = at::empty_like(x);
  at::Tensor mask;
  if (with_mask) mask = at::empty_like(x, x.options().dtype(at::kBool));
  if (is_bf16(x)) {
    const uint16_t* px = bf16_in(x);
    uint16_t* py = bf16_out(y);
    uint8_t* pm = with_mask ? reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>()) : nullptr;
    const float n = static_cast<float>(levels);
    at::parallel_for(0, x.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::act_values_bf16(px + begin, py + begin, end - begin, n, levels > 0);
      if (pm != nullptr) lowbit::clip_mask_bf16(px + begin, pm + begin, end - begin);
    });
    return {y, mask};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lowbit_act_forward", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    uint8_t* pm = with_mask ? reinterpret_cast<uint8_t*>(mask.mutable_data_ptr<bool>()) : nullptr;
    const scalar_t n = static_cast<scalar_t>(levels);
    const bool round = levels > 0;
    at::parallel_for(0, x.numel(), kGrain, [=](int64_t begin, int64_t end) {
      act_values<scalar_t>(px + begin, py + begin, end - begin, n, round);
      if (pm != nullptr) lowbit::clip_mask<scalar_t>(px + begin, pm + begin, end - begin);
    });
  });
  return {y, mask};
}

// y = q_k(clip(x, 0, 1)) written into `out` (same sizes and strides as x): the fused
// convolution's quantized input lives in a reused scratch buffer, so the forward and
// the backward recomputation allocate (and page-fault) nothing.
at::Tensor act_forward_out(const at::Tensor& x, double levels, at::Tensor& out) {
  check_dense(x, "x");
  check_pair(x, out);
  TORCH_CHECK(out.scalar_type() == x.scalar_type(), "out must have x's dtype");
  if (is_bf16(x)) {
    const uint16_t* px = bf16_in(x);
    uint16_t* py = bf16_out(out);
    const float n = static_cast<float>(levels);
    at::parallel_for(0, x.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::act_values_bf16(px + begin, py + begin, end - begin, n, levels > 0);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lowbit_act_forward_out", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = out.mutable_data_ptr<scalar_t>();
    const scalar_t n = static_cast<scalar_t>(levels);
    const bool round = levels > 0;
    at::parallel_for(0, x.numel(), kGrain, [=](int64_t begin, int64_t end) {
      act_values<scalar_t>(px + begin, py + begin, end - begin, n, round);
    });
  });
  return out;
}

// grad_x = where(mask, grad, 0): the clip's gradient times the STE's 1 (paper §3.1).
at::Tensor act_backward(const at::Tensor& grad, const at::Tensor& mask) {
  check_dense(grad, "grad");
  check_pair(grad, mask);
  auto out = at::empty_like(grad);
  if (is_bf16(grad)) {
    const uint16_t* pg = bf16_in(grad);
    const uint8_t* pm = reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>());
    uint16_t* po = bf16_out(out);
    at::parallel_for(0, grad.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::masked_grad_bf16(pg + begin, pm + begin, po + begin, end - begin);
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lowbit_act_backward", [&] {
    const scalar_t* pg = grad.const_data_ptr<scalar_t>();
    const uint8_t* pm = reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>());
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, grad.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::masked_grad<scalar_t>(pg + begin, pm + begin, po + begin, end - begin);
    });
  });
  return out;
}

// In place: grad = where(0 <= x <= 1, grad, 0), the mask recomputed from the input x
// (for the fused quantized convolution, which keeps x and no mask).
at::Tensor act_backward_from_input_(at::Tensor& grad, const at::Tensor& x) {
  check_dense(grad, "grad");
  check_pair(grad, x);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "grad must have x's dtype");
  if (is_bf16(grad)) {
    uint16_t* pg = bf16_out(grad);
    const uint16_t* px = bf16_in(x);
    at::parallel_for(0, grad.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::grad_from_input_bf16(pg + begin, px + begin, end - begin);
    });
    return grad;
  }
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lowbit_act_backward_from_input", [&] {
    scalar_t* pg = grad.mutable_data_ptr<scalar_t>();
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    at::parallel_for(0, grad.numel(), kGrain, [=](int64_t begin, int64_t end) {
      lowbit::grad_from_input<scalar_t>(pg + begin, px + begin, end - begin);
    });
  });
  return grad;
}

// DoReFa weights: t = tanh(w), m = max|t|, y = 2 q_k(t / (2m) + 1/2) - 1.
// Returns (y, t, m); t (like w) and m (0-dim) are what the backward needs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> weight_forward(const at::Tensor& w, double levels) {
  check_dense(w, "w");
  TORCH_CHECK(w.numel() > 0, "cannot quantize an empty weight");
  auto t = at::tanh(w);  // the reference's ATen kernel: bitwise equal
  auto y = at::empty_like(t);
  at::Tensor m;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "lowbit_weight_forward", [&] {
    const scalar_t* __restrict__ pt = t.const_data_ptr<scalar_t>();
    scalar_t* __restrict__ py = y.mutable_data_ptr<scalar_t>();
    const scalar_t mv = lowbit::abs_max<scalar_t>(pt, t.numel());
    m = at::scalar_tensor(mv, t.options());
    const scalar_t d = scalar_t(2) * mv;
    const scalar_t n = static_cast<scalar_t>(levels);
    const bool round = levels > 0;
    at::parallel_for(0, t.numel(), kGrain, [=](int64_t begin, int64_t end) {
      if (round) {
        lowbit::weight_values_round<scalar_t>(pt + begin, py + begin, end - begin, d, n);
      } else {
        lowbit::weight_values_plain<scalar_t>(pt + begin, py + begin, end - begin, d, n);
      }
    });
  });
  return {y, t, m};
}

// Exact gradient of the reference weight formula, following torch's derivative rules
// op by op (g: the upstream gradient, shaped like w):
//   gz = ((2 g) / n) n        sub, mul by 2, div by n, STE round, mul by n (n = 2^k - 1)
//   dL/dt direct = gz / d     d = 2m
//   dL/dd = sum(-gz ((t / d) / d)),  dL/dm = 2 dL/dd         (the max is not detached)
//   the arg-max elements (|t| == m; ties share evenly) add dL/dm / count * sgn(t)
//   dL/dw = tanh_backward(dL/dt, t)
// The sum and tanh_backward are the ATen kernels autograd calls, on bitwise equal
// operands, so the result equals the reference's autograd gradient bit for bit.
at::Tensor weight_backward(const at::Tensor& grad, const at::Tensor& t, const at::Tensor& m,
                           double levels) {
  check_dense(t, "t");
  check_pair(grad, t);
  auto gt = at::empty_like(t);
  auto p = at::empty_like(t);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "lowbit_weight_backward", [&] {
    const scalar_t* __restrict__ pg = grad.const_data_ptr<scalar_t>();
    const scalar_t* __restrict__ pt = t.const_data_ptr<scalar_t>();
    scalar_t* __restrict__ pgt = gt.mutable_data_ptr<scalar_t>();
    scalar_t* __restrict__ pp = p.mutable_data_ptr<scalar_t>();
    const scalar_t mv = m.item<scalar_t>();
    const scalar_t d = scalar_t(2) * mv;
    const scalar_t n = static_cast<scalar_t>(levels);
    const bool round = levels > 0;
    const int64_t numel = t.numel();
    at::parallel_for(0, numel, kGrain, [=](int64_t begin, int64_t end) {
      const int64_t len = end - begin;
      if (round) {
        lowbit::weight_grad_round<scalar_t>(pg + begin, pt + begin, pgt + begin, pp + begin,
                                            len, d, n);
      } else {
        lowbit::weight_grad_plain<scalar_t>(pg + begin, pt + begin, pgt + begin, pp + begin,
                                            len, d, n);
      }
    });
    const scalar_t gm = at::sum(p).item<scalar_t>() * scalar_t(2);
    // torch's max backward on the CPU: the NaN elements when the max is NaN, else
    // the elements equal to it, share the gradient evenly.
    const bool nan_max = std::isnan(mv);
    auto is_arg = [&](scalar_t v) {
      const scalar_t a = std::abs(v);
      return nan_max ? std::isnan(a) : a == mv;
    };
    int64_t count = 0;
    for (int64_t i = 0; i < numel; ++i) count += is_arg(pt[i]);
    const scalar_t share = gm / static_cast<scalar_t>(count);
    for (int64_t i = 0; i < numel; ++i) {
      if (is_arg(pt[i])) {
        const scalar_t v = pt[i];
        const scalar_t sgn = v > 0 ? scalar_t(1) : (v < 0 ? scalar_t(-1) : scalar_t(0));
        pgt[i] = pgt[i] + share * sgn;
      }
    }
  });
  return at::tanh_backward(gt, t);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("set_grain", &set_grain, "elements per parallel task; returns the old value");
  mod.def("act_forward", &act_forward, "q_k(clip(x, 0, 1)) and, optionally, its 1-byte mask");
  mod.def("act_forward_out", &act_forward_out, "q_k(clip(x, 0, 1)) into out");
  mod.def("act_backward", &act_backward, "where(mask, grad, 0)");
  mod.def("act_backward_from_input_", &act_backward_from_input_,
          "in place: grad = where(0 <= x <= 1, grad, 0)");
  mod.def("weight_forward", &weight_forward, "DoReFa weights: (y, tanh(w), max|tanh(w)|)");
  mod.def("weight_backward", &weight_backward, "exact gradient of the DoReFa weight quantizer");
}
