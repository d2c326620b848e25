// Exact CPU kernels for NB201's average pools: the searchable 3x3 / stride 1 / pad 1 pool
// (count_include_pad=False) and the 2x2 / stride 2 pool of the residual blocks' shortcut.
//
// Each output element is computed in the order of ATen's CPU kernel, which the Python fallbacks
// (harness/spaces/nb201.py) also follow: 3x3, the nine pixels of the zero-padded window
// row-major, the first two added first, then one true division by the window's in-image count;
// 2x2, ((x00 + x01) + x10) + x11, then / 4. Backward, ATen adds grad[o] / count[o] to each pixel of
// o's window, outputs row-major.
// Only additions and one division per element: nothing for the compiler to contract or reorder
// (no -ffast-math), and elements are independent, so threads and vector lanes change no bits.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <optional>
#include <vector>

namespace {

// the AVX2 clones below get these loops compiled for their target only if inlined into them
#define ALWAYS_INLINE inline __attribute__((always_inline))

// Window sums of a zero-padded plane (h + 2 rows of pw = w + 2), taken flat: sums[k] is the sum of
// the 3x3 window whose top-left pixel is pad[k], so output pixel (i, j) is sums[i * pw + j]; the
// k whose column is j >= w straddle two rows and are never read. One long loop over every k
// vectorises at any plane width (a 4 x 4 plane is 22 sums, not four rows of 4).
template <typename T>
ALWAYS_INLINE void flat_window_sums(const T* pad, T* sums, int64_t h, int64_t pw) {
  const T* r0 = pad;
  const T* r1 = pad + pw;
  const T* r2 = pad + 2 * pw;
  const int64_t n = h * pw - 2;
  for (int64_t k = 0; k < n; ++k) {
    T s = r0[k] + r0[k + 1];
    s += r0[k + 2];
    s += r1[k];
    s += r1[k + 1];
    s += r1[k + 2];
    s += r2[k];
    s += r2[k + 1];
    s += r2[k + 2];
    sums[k] = s;
  }
}

// One plane: the padded copy (forward x, backward g / div), its window sums, then the output
// (forward sum / div, backward the sum). Additions and true divisions only, each element on its
// own: vector width changes no bits.
template <typename T>
ALWAYS_INLINE void pool3_plane(const T* src, T* out, const T* div, T* pad, T* sums, int64_t h, int64_t w, bool backward) {
  const int64_t pw = w + 2;
  for (int64_t i = 0; i < h; ++i) {
    T* prow = pad + (i + 1) * pw + 1;
    const T* srow = src + i * w;
    const T* drow = div + i * w;
    if (backward) {
      for (int64_t j = 0; j < w; ++j) prow[j] = srow[j] / drow[j];
    } else {
      for (int64_t j = 0; j < w; ++j) prow[j] = srow[j];
    }
  }
  flat_window_sums<T>(pad, sums, h, pw);
  for (int64_t i = 0; i < h; ++i) {
    const T* srow = sums + i * pw;
    T* orow = out + i * w;
    const T* drow = div + i * w;
    if (backward) {
      for (int64_t j = 0; j < w; ++j) orow[j] = srow[j];
    } else {
      for (int64_t j = 0; j < w; ++j) orow[j] = srow[j] / drow[j];
    }
  }
}

template <typename T>
ALWAYS_INLINE void pool3_planes(const T* x, T* out, const T* div, int64_t begin, int64_t end, int64_t h, int64_t w,
                  bool backward) {
  std::vector<T> pad((h + 2) * (w + 2), T(0)), sums(h * (w + 2));
  for (int64_t p = begin; p < end; ++p)
    pool3_plane<T>(x + p * h * w, out + p * h * w, div, pad.data(), sums.data(), h, w, backward);
}

#if defined(__x86_64__) || defined(__i386__)
// The same loops compiled for 8-float vectors (no FMA: there is nothing to contract anyway).
__attribute__((target("avx2"))) void pool3_planes_avx2(const float* x, float* out, const float* div, int64_t begin,
                                                       int64_t end, int64_t h, int64_t w, bool backward) {
  pool3_planes<float>(x, out, div, begin, end, h, w, backward);
}
#endif

// A thread's run of planes; for float, the AVX2 clone where the CPU has it (same bits).
template <typename T>
void pool3_range(const T* x, T* out, const T* div, int64_t begin, int64_t end, int64_t h, int64_t w, bool backward) {
  pool3_planes<T>(x, out, div, begin, end, h, w, backward);
}

void pool3_range(const float* x, float* out, const float* div, int64_t begin, int64_t end, int64_t h, int64_t w,
                 bool backward) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  if (has_avx2) return pool3_planes_avx2(x, out, div, begin, end, h, w, backward);
#endif
  pool3_planes<float>(x, out, div, begin, end, h, w, backward);
}

// forward: out = window_sum(x) / div; backward: grad_in = window_sum(g / div) (ATen's
// avg_pool2d_backward adds grad[o] / count[o] to each pixel of o's window, outputs row-major)
torch::Tensor pool3(torch::Tensor x, torch::Tensor div, bool backward) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "pool3: a 4-d CPU tensor");
  x = x.contiguous();
  div = div.to(x.scalar_type()).contiguous();
  const int64_t h = x.size(2), w = x.size(3), planes = x.size(0) * x.size(1);
  TORCH_CHECK(div.numel() == h * w, "pool3: divisor of ", h, "x", w, " elements");
  auto out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool3", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dp = div.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    // planes of a few hundred pixels: hand each thread a run of them, not one at a time
    at::parallel_for(0, planes, 16, [&](int64_t begin, int64_t end) {
      pool3_range(xp, op, dp, begin, end, h, w, backward);
    });
  });
  return out;
}

// 2x2 / stride 2 (even height and width): forward ((x00 + x01) + x10) + x11, / 4; backward each
// input pixel of window o gets grad[o] / 4
torch::Tensor pool2(torch::Tensor x, bool backward) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu(), "pool2: a 4-d CPU tensor");
  x = x.contiguous();
  const int64_t planes = x.size(0) * x.size(1);
  const int64_t h = x.size(2), w = x.size(3);
  TORCH_CHECK(backward || (h % 2 == 0 && w % 2 == 0), "pool2: even height and width");
  auto out = backward ? torch::empty({x.size(0), x.size(1), 2 * h, 2 * w}, x.options())
                      : torch::empty({x.size(0), x.size(1), h / 2, w / 2}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pool2", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t four = scalar_t(4);
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        if (backward) {  // x is the gradient (h x w), out the input's (2h x 2w)
          const scalar_t* g = xp + p * h * w;
          scalar_t* o = op + p * 4 * h * w;
          for (int64_t i = 0; i < h; ++i)
            for (int64_t j = 0; j < w; ++j) {
              const scalar_t q = g[i * w + j] / four;
              o[(2 * i) * (2 * w) + 2 * j] = q;
              o[(2 * i) * (2 * w) + 2 * j + 1] = q;
              o[(2 * i + 1) * (2 * w) + 2 * j] = q;
              o[(2 * i + 1) * (2 * w) + 2 * j + 1] = q;
            }
        } else {
          const scalar_t* src = xp + p * h * w;
          scalar_t* o = op + p * (h / 2) * (w / 2);
          for (int64_t i = 0; i < h / 2; ++i)
            for (int64_t j = 0; j < w / 2; ++j) {
              const scalar_t* r0 = src + (2 * i) * w + 2 * j;
              const scalar_t* r1 = r0 + w;
              scalar_t s = r0[0] + r0[1];
              s += r1[0];
              s += r1[1];
              o[i * (w / 2) + j] = s / four;
            }
        }
      }
    });
  });
  return out;
}

}  // namespace

// How many threads a parallel loop of n items ran on (tests: the library is built with OpenMP).
int64_t parallel_threads_used(int64_t n) {
  std::vector<int> seen(n, -1);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) seen[i] = at::get_thread_num();
  });
  std::sort(seen.begin(), seen.end());
  return std::unique(seen.begin(), seen.end()) - seen.begin();
}

// batchnorm.cpp
std::vector<torch::Tensor> bn_forward(const torch::Tensor& input, const std::optional<torch::Tensor>& weight,
                                      const std::optional<torch::Tensor>& bias, double eps,
                                      const std::optional<torch::Tensor>& running_mean,
                                      const std::optional<torch::Tensor>& running_var, double momentum);

std::string bn_backward_variant_name();
std::vector<torch::Tensor> bn_backward(const torch::Tensor& grad_out, const torch::Tensor& input,
                                       const std::optional<torch::Tensor>& weight, const torch::Tensor& save_mean,
                                       const torch::Tensor& save_invstd, double eps, std::vector<bool> mask);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pool3", &pool3, "exact 3x3 average pool (forward, or backward with backward=true)");
  m.def("pool2", &pool2, "exact 2x2 / stride 2 average pool (forward, or backward with backward=true)");
  m.def("bn_backward", &bn_backward,
        "exact batch-norm backward with batch statistics on the saved mean and inverse std: (grad_input, "
        "grad_weight, grad_bias), None where mask is false");
  m.def("bn_backward_variant", &bn_backward_variant_name,
        "which emulation of ATen's backward reproduces it here ('' when none: ATen's own runs)");
  m.def("parallel_threads_used", &parallel_threads_used, "threads a parallel loop of n items ran on");
  m.def("bn_forward", &bn_forward,
        "exact batch-norm forward with batch statistics: (out, save_mean, save_invstd); running buffers, if "
        "given, updated in place with momentum",
        py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("running_mean") = py::none(),
        py::arg("running_var") = py::none(), py::arg("momentum") = 0.0);
}
