// Exact CPU batch-norm forward with batch statistics (training mode), optionally updating running
// buffers: the bits of ATen's kernels for contiguous NCHW float input (aten/src/ATen/native/cpu/
// batch_norm_kernel.cpp and native/Normalization.cpp):
//   mean_c    = float(sum_double(x) / N)            N = batch x H x W, elements in memory order
//   var_sum_c = float(sum_double(float(x - mean)^2))
//   invstd_c  = float(1 / sqrt(double(var_sum_c / float(N)) + eps))
//   alpha_c   = invstd_c * weight_c;  beta_c = fma(-mean_c, alpha_c, bias_c)
//   out       = fma(x, alpha_c, beta_c)
// and, given running buffers (Normalization.cpp's batch_norm_cpu_update_stats_template, compiled
// there without FMA: separately rounded products), with m = float(momentum):
//   running_mean_c = m * mean_c + (1 - m) * running_mean_c                      (float)
//   running_var_c  = float(m * double(var_sum_c / float(N - 1)) + float((1 - m) * running_var_c))
// (ATen's build contracts beta and out into fused multiply-adds; tests compare every bit with
// ATen, forward and, through ATen's own backward on these saved statistics, backward.)
// ATen sums each channel as one dependency chain of double additions, so it waits on the adder's
// latency; here CB channels' chains run interleaved, each still in its own order (same bits), and
// the transform runs vectorised with hardware FMA where the CPU has it.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>
#include <vector>

namespace {

template <int CB>
void channel_stats(const float* x, int64_t n_batch, int64_t n_channel, int64_t image_size, int64_t c0,
                   float* mean_out, float* invstd_out, float* var_sum_out, double eps) {
  const int64_t n = n_batch * image_size;
  double sum[CB];
  for (int k = 0; k < CB; ++k) sum[k] = 0;
  for (int64_t b = 0; b < n_batch; ++b) {
    const float* base = x + (b * n_channel + c0) * image_size;
    for (int64_t i = 0; i < image_size; ++i)
      for (int k = 0; k < CB; ++k) sum[k] += base[k * image_size + i];
  }
  float mean[CB];
  double var_sum[CB];
  for (int k = 0; k < CB; ++k) {
    mean[k] = static_cast<float>(sum[k] / n);
    var_sum[k] = 0;
  }
  for (int64_t b = 0; b < n_batch; ++b) {
    const float* base = x + (b * n_channel + c0) * image_size;
    for (int64_t i = 0; i < image_size; ++i)
      for (int k = 0; k < CB; ++k) {
        const float d = base[k * image_size + i] - mean[k];
        const float sq = d * d;
        var_sum[k] += sq;
      }
  }
  for (int k = 0; k < CB; ++k) {
    const float var = static_cast<float>(var_sum[k]) / static_cast<float>(n);
    mean_out[c0 + k] = mean[k];
    var_sum_out[c0 + k] = static_cast<float>(var_sum[k]);
    invstd_out[c0 + k] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
  }
}

// Every channel's statistics, CB channels' chains interleaved per block, blocks over the threads
template <int CB>
void all_channel_stats(const float* x, int64_t n_batch, int64_t n_channel, int64_t image_size, float* mean_out,
                       float* invstd_out, float* var_sum_out, double eps) {
  at::parallel_for(0, (n_channel + CB - 1) / CB, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t c0 = blk * CB;
      if (c0 + CB <= n_channel) {
        channel_stats<CB>(x, n_batch, n_channel, image_size, c0, mean_out, invstd_out, var_sum_out, eps);
      } else {
        for (int64_t c = c0; c < n_channel; ++c)
          channel_stats<1>(x, n_batch, n_channel, image_size, c, mean_out, invstd_out, var_sum_out, eps);
      }
    }
  });
}

// Planes [begin, end) of out = fma(x, alpha_c, beta_c). The FMA variant is its own target
// function, called from inside the parallel loop: OpenMP outlines a parallel loop's body into a
// function of its own, which would not inherit the target and would call fmaf from libm per element.
template <typename Fma>
inline void affine_planes(const float* x, float* out, const float* alpha, const float* beta, int64_t begin,
                          int64_t end, int64_t n_channel, int64_t image_size, Fma fma) {
  for (int64_t p = begin; p < end; ++p) {
    const float a = alpha[p % n_channel], b = beta[p % n_channel];
    const float* xi = x + p * image_size;
    float* o = out + p * image_size;
    for (int64_t i = 0; i < image_size; ++i) o[i] = fma(xi[i], a, b);
  }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void affine_planes_fma(const float* x, float* out, const float* alpha,
                                                            const float* beta, int64_t begin, int64_t end,
                                                            int64_t n_channel, int64_t image_size) {
  affine_planes(x, out, alpha, beta, begin, end, n_channel, image_size,
                [](float v, float a, float b) { return __builtin_fmaf(v, a, b); });
}
#endif

void affine_planes_libm(const float* x, float* out, const float* alpha, const float* beta, int64_t begin,
                        int64_t end, int64_t n_channel, int64_t image_size) {
  affine_planes(x, out, alpha, beta, begin, end, n_channel, image_size,
                [](float v, float a, float b) { return std::fma(v, a, b); });
}

// ATen's running-statistics update, channel by channel. Kept out of any FMA-enabled code (and
// contraction off) so each product is rounded on its own, as in ATen's baseline-ISA build.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void update_running_stats(const float* mean, const float* var_sum, int64_t n, int64_t n_channel, float momentum,
                          float* running_mean, float* running_var) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  for (int64_t c = 0; c < n_channel; ++c) {
    if (running_mean) running_mean[c] = momentum * mean[c] + (1 - momentum) * running_mean[c];
    if (running_var) {
      // ATen: accscalar_t (double) unbiased_var = float var_sum / (n - 1), a float division
      const double unbiased_var = var_sum[c] / static_cast<float>(n - 1);
      const float kept = (1 - momentum) * running_var[c];  // float x float, rounded to float
      running_var[c] = static_cast<float>(momentum * unbiased_var + kept);
    }
  }
}

float* running_buffer(const std::optional<torch::Tensor>& t, int64_t n_channel, const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->scalar_type() == torch::kFloat && t->is_contiguous() && t->numel() == n_channel,
              "bn_forward: ", name, " must be a contiguous float tensor of one value per channel");
  return t->data_ptr<float>();
}

}  // namespace

// (out, save_mean, save_invstd) as ATen's native_batch_norm(training=True); given running buffers,
// updated in place with ``momentum`` as ATen updates them.
std::vector<torch::Tensor> bn_forward(const torch::Tensor& input, const std::optional<torch::Tensor>& weight,
                                      const std::optional<torch::Tensor>& bias, double eps,
                                      const std::optional<torch::Tensor>& running_mean,
                                      const std::optional<torch::Tensor>& running_var, double momentum) {
  TORCH_CHECK(input.dim() >= 2 && input.scalar_type() == torch::kFloat && input.is_contiguous(),
              "bn_forward: contiguous float input");
  const int64_t n_batch = input.size(0), n_channel = input.size(1);
  const int64_t image_size = n_batch && n_channel ? input.numel() / n_batch / n_channel : 0;
  TORCH_CHECK(image_size > 1 && n_batch > 0, "bn_forward: needs H x W > 1 (ATen takes another path)");
  auto mean = torch::empty({n_channel}, input.options());
  auto invstd = torch::empty({n_channel}, input.options());
  auto out = torch::empty_like(input);
  const float* x = input.data_ptr<float>();
  float* m = mean.data_ptr<float>();
  float* s = invstd.data_ptr<float>();
  std::vector<float> var_sum(n_channel);
  float* v = var_sum.data();
  float* rm = running_buffer(running_mean, n_channel, "running_mean");
  float* rv = running_buffer(running_var, n_channel, "running_var");
  // eight chains per thread hide the adder's latency; with fewer channels than 8 per thread (NB201's
  // C = 8 first stage at 2 threads), four per thread keep every thread busy
  if (n_channel >= 8 * at::get_num_threads()) {
    all_channel_stats<8>(x, n_batch, n_channel, image_size, m, s, v, eps);
  } else {
    all_channel_stats<4>(x, n_batch, n_channel, image_size, m, s, v, eps);
  }
  if (rm || rv) update_running_stats(m, v, n_batch * image_size, n_channel, static_cast<float>(momentum), rm, rv);
  std::vector<float> alpha(n_channel), beta(n_channel);
  const float* w = weight.has_value() && weight->defined() ? weight->contiguous().data_ptr<float>() : nullptr;
  const float* b = bias.has_value() && bias->defined() ? bias->contiguous().data_ptr<float>() : nullptr;
  for (int64_t c = 0; c < n_channel; ++c) {
    alpha[c] = s[c] * (w ? w[c] : 1.0f);
    beta[c] = std::fma(-m[c], alpha[c], b ? b[c] : 0.0f);
  }
#if defined(__x86_64__) || defined(__i386__)
  static const bool has_fma = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2");
#else
  constexpr bool has_fma = false;  // std::fma: the same fused result, the compiler's way
#endif
  auto affine = affine_planes_libm;
#if defined(__x86_64__) || defined(__i386__)
  if (has_fma) affine = affine_planes_fma;
#endif
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n_batch * n_channel, 16, [&](int64_t begin, int64_t end) {
    affine(x, o, alpha.data(), beta.data(), begin, end, n_channel, image_size);
  });
  return {out, mean, invstd};
}
