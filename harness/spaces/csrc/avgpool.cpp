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

#include <optional>
#include <vector>

namespace {

template <typename T>
void window_sums(const T* pad, T* out, const T* div, int64_t h, int64_t w) {
  const int64_t pw = w + 2;
  for (int64_t i = 0; i < h; ++i) {
    const T* r0 = pad + i * pw;
    const T* r1 = r0 + pw;
    const T* r2 = r1 + pw;
    T* o = out + i * w;
    for (int64_t j = 0; j < w; ++j) {
      T s = r0[j] + r0[j + 1];
      s += r0[j + 2];
      s += r1[j];
      s += r1[j + 1];
      s += r1[j + 2];
      s += r2[j];
      s += r2[j + 1];
      s += r2[j + 2];
      o[j] = div ? s / div[i * w + j] : s;
    }
  }
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
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> pad((h + 2) * (w + 2), scalar_t(0));
      for (int64_t p = begin; p < end; ++p) {
        const scalar_t* src = xp + p * h * w;
        for (int64_t i = 0; i < h; ++i)
          for (int64_t j = 0; j < w; ++j)
            pad[(i + 1) * (w + 2) + j + 1] = backward ? src[i * w + j] / dp[i * w + j] : src[i * w + j];
        window_sums<scalar_t>(pad.data(), op + p * h * w, backward ? nullptr : dp, h, w);
      }
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

// batchnorm.cpp
std::vector<torch::Tensor> bn_forward(const torch::Tensor& input, const std::optional<torch::Tensor>& weight,
                                      const std::optional<torch::Tensor>& bias, double eps,
                                      const std::optional<torch::Tensor>& running_mean,
                                      const std::optional<torch::Tensor>& running_var, double momentum);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pool3", &pool3, "exact 3x3 average pool (forward, or backward with backward=true)");
  m.def("pool2", &pool2, "exact 2x2 / stride 2 average pool (forward, or backward with backward=true)");
  m.def("bn_forward", &bn_forward,
        "exact batch-norm forward with batch statistics: (out, save_mean, save_invstd); running buffers, if "
        "given, updated in place with momentum",
        py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("running_mean") = py::none(),
        py::arg("running_var") = py::none(), py::arg("momentum") = 0.0);
}
