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
#include <cstring>
#include <string>
#include <optional>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

#define ALWAYS_INLINE inline __attribute__((always_inline))

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

#if defined(__x86_64__) || defined(__i386__)
// Adds 4 consecutive elements of 4 channels (one float vector of 4 per channel) to acc, whose lane k
// is channel k's sum: element after element, each lane's own chain of double additions in ATen's
// order (the vector only runs four channels' chains side by side).
__attribute__((target("avx2"))) ALWAYS_INLINE __m256d add_4x4(__m256d acc, __m128 c0, __m128 c1, __m128 c2,
                                                               __m128 c3) {
  const __m256d d0 = _mm256_cvtps_pd(c0), d1 = _mm256_cvtps_pd(c1), d2 = _mm256_cvtps_pd(c2),
                d3 = _mm256_cvtps_pd(c3);
  const __m256d t0 = _mm256_unpacklo_pd(d0, d1), t1 = _mm256_unpackhi_pd(d0, d1);
  const __m256d t2 = _mm256_unpacklo_pd(d2, d3), t3 = _mm256_unpackhi_pd(d2, d3);
  acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(t0, t2, 0x20));  // element 0 of each channel
  acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(t1, t3, 0x20));  // element 1
  acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(t0, t2, 0x31));  // element 2
  return _mm256_add_pd(acc, _mm256_permute2f128_pd(t1, t3, 0x31));  // element 3
}

// One pass over 4 * G channels from c0 (image_size a multiple of 8): out[k] = channel c0 + k's double
// sum of its elements (SQUARES: of float (x - mean_k)^2, mean_k broadcast in mv[k]), in memory
// order. Lanes are channels, so G vectors of sums keep 4 * G chains in flight; each channel's chain
// does the same additions in the same order as one scalar chain, so the bits are the same. Squares
// are a float subtraction and product (no FMA in this target).
template <int G, bool SQUARES>
__attribute__((target("avx2"))) ALWAYS_INLINE void channel_sums_avx2(const float* x, int64_t n_batch,
                                                                      int64_t n_channel, int64_t image_size,
                                                                      int64_t c0, const __m256* mv, double* out) {
  __m256d acc[G];
  for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_pd();
  for (int64_t b = 0; b < n_batch; ++b) {
    const float* base = x + (b * n_channel + c0) * image_size;
    for (int64_t i = 0; i < image_size; i += 8)
      for (int g = 0; g < G; ++g) {
        __m256 v[4];
        for (int k = 0; k < 4; ++k) {
          v[k] = _mm256_loadu_ps(base + (4 * g + k) * image_size + i);
          if (SQUARES) {
            const __m256 d = _mm256_sub_ps(v[k], mv[4 * g + k]);
            v[k] = _mm256_mul_ps(d, d);
          }
        }
        acc[g] = add_4x4(acc[g], _mm256_castps256_ps128(v[0]), _mm256_castps256_ps128(v[1]),
                         _mm256_castps256_ps128(v[2]), _mm256_castps256_ps128(v[3]));
        acc[g] = add_4x4(acc[g], _mm256_extractf128_ps(v[0], 1), _mm256_extractf128_ps(v[1], 1),
                         _mm256_extractf128_ps(v[2], 1), _mm256_extractf128_ps(v[3], 1));
      }
  }
  for (int g = 0; g < G; ++g) _mm256_storeu_pd(out + 4 * g, acc[g]);
}

// channel_stats for 4 * G channels from c0 with AVX2: the mean's sums, then the squares' sums.
template <int G>
__attribute__((target("avx2"))) void channel_stats_avx2(const float* x, int64_t n_batch, int64_t n_channel,
                                                        int64_t image_size, int64_t c0, float* mean_out,
                                                        float* invstd_out, float* var_sum_out, double eps) {
  const int64_t n = n_batch * image_size;
  double sum[4 * G], var_sum[4 * G];
  float mean[4 * G];
  __m256 mv[4 * G];
  channel_sums_avx2<G, false>(x, n_batch, n_channel, image_size, c0, mv, sum);
  for (int k = 0; k < 4 * G; ++k) {
    mean[k] = static_cast<float>(sum[k] / n);
    mv[k] = _mm256_set1_ps(mean[k]);
  }
  channel_sums_avx2<G, true>(x, n_batch, n_channel, image_size, c0, mv, var_sum);
  for (int k = 0; k < 4 * G; ++k) {
    const float var = static_cast<float>(var_sum[k]) / static_cast<float>(n);
    mean_out[c0 + k] = mean[k];
    var_sum_out[c0 + k] = static_cast<float>(var_sum[k]);
    invstd_out[c0 + k] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
  }
}
#endif

// Every channel's statistics, CB channels' chains interleaved per block, blocks over the threads
template <int CB>
void all_channel_stats(const float* x, int64_t n_batch, int64_t n_channel, int64_t image_size, float* mean_out,
                       float* invstd_out, float* var_sum_out, double eps) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  const bool vector = has_avx2 && image_size % 8 == 0;
#else
  constexpr bool vector = false;
#endif
  at::parallel_for(0, (n_channel + CB - 1) / CB, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t c0 = blk * CB;
      if (c0 + CB <= n_channel) {
#if defined(__x86_64__) || defined(__i386__)
        if (vector) {
          channel_stats_avx2<CB / 4>(x, n_batch, n_channel, image_size, c0, mean_out, invstd_out, var_sum_out, eps);
          continue;
        }
#endif
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
  // more chains per thread hide the adder's latency; with fewer channels than 8 per thread (NB201's
  // C = 8 first stage at 2 threads), four per thread keep every thread busy
  if (n_channel >= 16 * at::get_num_threads()) {
    all_channel_stats<16>(x, n_batch, n_channel, image_size, m, s, v, eps);
  } else if (n_channel >= 8 * at::get_num_threads()) {
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

// ---------------------------------------------------------------------------------------------
// Exact CPU batch-norm backward with batch statistics: the bits of ATen's
// batch_norm_cpu_backward_contiguous_impl for contiguous float input and gradient, per channel c
// (N = batch x H x W):
//   sum_c  = double sum over images of float reduce_all(dy plane)
//   dotp_c = double sum over images of float map2_reduce_all((x - mean) * dy, +)
//   k = float(dotp) * invstd * invstd / float(N);  grad_mean = float(sum / N)
//   dx = ((dy - grad_mean) - (x - mean) * k) * invstd * w
//   grad_weight = float(dotp * invstd);  grad_bias = float(sum)
// ATen's reduce_all keeps one accumulator per vector lane (8 lanes with AVX2, 16 with AVX-512) and
// folds the lanes at the end (a halving tree where ATen specialises it, else lane after lane), and
// its build may fuse a multiply into the following add. Which of these this torch build does is not
// guessed: the first call tries each variant against ATen's own backward on test data and keeps
// the one that gives every bit (none: ATen's backward itself runs). ATen reads each plane three
// times (dy, then x and dy, then both again); here the two reductions share one pass.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")  // a multiply-add is fused only where a variant says so

namespace {

template <int W, bool TREE>
ALWAYS_INLINE float fold_lanes(float* lanes) {
  if (TREE) {
    for (int half = W / 2; half >= 1; half /= 2)
      for (int i = 0; i < half; ++i) lanes[i] = lanes[i] + lanes[i + half];
    return lanes[0];
  }
  float acc = lanes[0];
  for (int i = 1; i < W; ++i) acc = acc + lanes[i];
  return acc;
}

#if defined(__x86_64__) || defined(__i386__)
#define BN_BACKWARD_TARGET __attribute__((target("avx2,fma")))

// Per channel c of [c_begin, c_end): the two reductions in one pass over each plane, W lanes kept as
// W / 8 AVX2 registers (the lanes are independent, so 16 ATen lanes are two registers here), then
// the gradient; image_size a multiple of W.
template <int W, bool TREE, bool FMA_DOT, bool FMA_DX>
BN_BACKWARD_TARGET void bn_backward_variant(const float* x, const float* dy, float* dx, const float* weight,
                                            const float* mean, const float* invstd, float* grad_weight,
                                            float* grad_bias, int64_t n_batch, int64_t n_channel,
                                            int64_t image_size, int64_t c_begin, int64_t c_end) {
  constexpr int V = W / 8;
  const int64_t n = n_batch * image_size;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const float m = mean[c], s = invstd[c], w = weight ? weight[c] : 1.0f;
    const __m256 mv = _mm256_set1_ps(m);
    double sum = 0, dotp = 0;
    for (int64_t b = 0; b < n_batch; ++b) {
      const float* xp = x + (b * n_channel + c) * image_size;
      const float* gp = dy + (b * n_channel + c) * image_size;
      __m256 sv[V], dv[V];
      for (int v = 0; v < V; ++v) {
        sv[v] = _mm256_loadu_ps(gp + 8 * v);
        dv[v] = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xp + 8 * v), mv), sv[v]);
      }
      for (int64_t d = W; d < image_size; d += W)
        for (int v = 0; v < V; ++v) {
          const __m256 g = _mm256_loadu_ps(gp + d + 8 * v);
          const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(xp + d + 8 * v), mv);
          sv[v] = _mm256_add_ps(sv[v], g);
          dv[v] = FMA_DOT ? _mm256_fmadd_ps(xm, g, dv[v]) : _mm256_add_ps(dv[v], _mm256_mul_ps(xm, g));
        }
      float sl[W], dl[W];
      for (int v = 0; v < V; ++v) {
        _mm256_storeu_ps(sl + 8 * v, sv[v]);
        _mm256_storeu_ps(dl + 8 * v, dv[v]);
      }
      sum += fold_lanes<W, TREE>(sl);
      dotp += fold_lanes<W, TREE>(dl);
    }
    if (dx) {
      const float k = static_cast<float>(dotp) * s * s / static_cast<float>(n);
      const float grad_mean = static_cast<float>(sum / n);
      const __m256 kv = _mm256_set1_ps(k), gmv = _mm256_set1_ps(grad_mean), sv = _mm256_set1_ps(s),
                   wv = _mm256_set1_ps(w);
      for (int64_t b = 0; b < n_batch; ++b) {
        const int64_t off = (b * n_channel + c) * image_size;
        for (int64_t j = 0; j < image_size; j += 8) {
          const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(x + off + j), mv);
          const __m256 g = _mm256_sub_ps(_mm256_loadu_ps(dy + off + j), gmv);
          const __m256 t = FMA_DX ? _mm256_fnmadd_ps(xm, kv, g) : _mm256_sub_ps(g, _mm256_mul_ps(xm, kv));
          _mm256_storeu_ps(dx + off + j, _mm256_mul_ps(_mm256_mul_ps(t, sv), wv));
        }
      }
    }
    if (grad_weight) grad_weight[c] = static_cast<float>(dotp * s);
    if (grad_bias) grad_bias[c] = static_cast<float>(sum);
  }
}
#define BN_HAVE_VARIANTS 1
#else
#define BN_HAVE_VARIANTS 0
#endif

using BackwardFn = void (*)(const float*, const float*, float*, const float*, const float*, const float*, float*,
                            float*, int64_t, int64_t, int64_t, int64_t, int64_t);

struct BackwardVariant {
  int width;
  BackwardFn fn;
  const char* name;
};

#define BN_VARIANT(W, T, FD, FX) \
  BackwardVariant { W, &bn_backward_variant<W, T, FD, FX>, #W " lanes, tree " #T ", fma dot " #FD ", fma dx " #FX }

const std::vector<BackwardVariant>& backward_variants() {
#if !BN_HAVE_VARIANTS
  static const std::vector<BackwardVariant> all;
#else
  static const std::vector<BackwardVariant> all = {
      BN_VARIANT(8, true, true, true),    BN_VARIANT(16, true, true, true),   BN_VARIANT(8, true, false, false),
      BN_VARIANT(16, true, false, false), BN_VARIANT(8, true, true, false),   BN_VARIANT(16, true, true, false),
      BN_VARIANT(8, true, false, true),   BN_VARIANT(16, true, false, true),  BN_VARIANT(8, false, true, true),
      BN_VARIANT(16, false, true, true),  BN_VARIANT(8, false, false, false), BN_VARIANT(16, false, false, false),
      BN_VARIANT(8, false, true, false),  BN_VARIANT(16, false, true, false), BN_VARIANT(8, false, false, true),
      BN_VARIANT(16, false, false, true)};
#endif
  return all;
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() && std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0;
}

std::vector<torch::Tensor> run_variant(const BackwardVariant& v, const torch::Tensor& g, const torch::Tensor& x,
                                       const torch::Tensor& weight, const torch::Tensor& mean,
                                       const torch::Tensor& invstd, bool want_dx, bool want_w, bool want_b) {
  const int64_t n_batch = x.size(0), n_channel = x.size(1), image_size = x.numel() / n_batch / n_channel;
  auto dx = want_dx ? torch::empty_like(x) : torch::Tensor();
  auto gw = want_w ? torch::empty({n_channel}, x.options()) : torch::Tensor();
  auto gb = want_b ? torch::empty({n_channel}, x.options()) : torch::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const float* wp = weight.defined() ? weight.data_ptr<float>() : nullptr;
  const float* mp = mean.data_ptr<float>();
  const float* sp = invstd.data_ptr<float>();
  float* dxp = want_dx ? dx.data_ptr<float>() : nullptr;
  float* gwp = want_w ? gw.data_ptr<float>() : nullptr;
  float* gbp = want_b ? gb.data_ptr<float>() : nullptr;
  at::parallel_for(0, n_channel, 1, [&](int64_t begin, int64_t end) {
    v.fn(xp, gp, dxp, wp, mp, sp, gwp, gbp, n_batch, n_channel, image_size, begin, end);
  });
  return {dx, gw, gb};
}

// The variant that reproduces ATen here, or -1. Test data: a fixed pseudo-random fill at three plane
// sizes and three magnitudes, with and without an affine weight.
int choose_backward_variant() {
#if BN_HAVE_VARIANTS
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return -1;
#endif
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto fill = [&](torch::Tensor t, float scale) {
    float* p = t.data_ptr<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      p[i] = scale * (static_cast<float>(static_cast<int64_t>(state >> 40) - (1ll << 23)) / (1 << 22));
    }
  };
  const auto& variants = backward_variants();
  if (variants.empty()) return -1;
  std::vector<bool> ok(variants.size(), true);
  const std::vector<std::vector<int64_t>> shapes = {{4, 3, 16, 16}, {6, 5, 8, 8}, {16, 4, 4, 4}};
  for (const auto& shape : shapes)
    for (float scale : {1e-3f, 1.0f, 1e3f})
      for (bool affine : {false, true}) {
        auto opts = torch::TensorOptions().dtype(torch::kFloat);
        auto x = torch::empty(shape, opts), g = torch::empty(shape, opts);
        fill(x, scale);
        fill(g, 1.0f);
        torch::Tensor w;
        if (affine) {
          w = torch::empty({shape[1]}, opts);
          fill(w, 1.0f);
        }
        auto stats = at::native_batch_norm(x, w, {}, {}, {}, true, 0.1, 1e-5);
        const auto& mean = std::get<1>(stats);
        const auto& invstd = std::get<2>(stats);
        auto ref = at::native_batch_norm_backward(g, x, w, {}, {}, mean, invstd, true, 1e-5, {true, affine, affine});
        for (size_t i = 0; i < variants.size(); ++i) {
          if (!ok[i]) continue;
          auto got = run_variant(variants[i], g, x, w, mean, invstd, true, affine, affine);
          ok[i] = same_bits(got[0], std::get<0>(ref)) &&
                  (!affine || (same_bits(got[1], std::get<1>(ref)) && same_bits(got[2], std::get<2>(ref))));
        }
      }
  for (size_t i = 0; i < variants.size(); ++i)
    if (ok[i]) return static_cast<int>(i);
  return -1;
}

int backward_variant() {
  static const int chosen = choose_backward_variant();
  return chosen;
}

}  // namespace

#pragma GCC pop_options

// Which emulation of ATen's backward this build and CPU use ("" when none matches: ATen's runs).
std::string bn_backward_variant_name() {
  const int v = backward_variant();
  return v < 0 ? std::string() : std::string(backward_variants()[v].name);
}

// (grad_input, grad_weight, grad_bias) as ATen's native_batch_norm_backward(train=True) on the saved
// mean and inverse std; each entry undefined (None) where ``mask`` does not ask for it.
std::vector<torch::Tensor> bn_backward(const torch::Tensor& grad_out, const torch::Tensor& input,
                                       const std::optional<torch::Tensor>& weight, const torch::Tensor& save_mean,
                                       const torch::Tensor& save_invstd, double eps, std::vector<bool> mask) {
  TORCH_CHECK(mask.size() == 3, "bn_backward: mask of three flags");
  const torch::Tensor w = weight.has_value() && weight->defined() ? weight->contiguous() : torch::Tensor();
  const int v = backward_variant();
  const bool fits = v >= 0 && input.dim() >= 2 && input.scalar_type() == torch::kFloat &&
                    grad_out.scalar_type() == torch::kFloat && input.is_contiguous() && grad_out.is_contiguous() &&
                    grad_out.sizes() == input.sizes() && input.size(0) > 0 && input.size(1) > 0 &&
                    save_mean.is_contiguous() && save_invstd.is_contiguous();
  const int64_t image_size = fits ? input.numel() / input.size(0) / input.size(1) : 0;
  if (!fits || image_size < backward_variants()[v].width || image_size % backward_variants()[v].width != 0) {
    auto ref = at::native_batch_norm_backward(grad_out, input, w, {}, {}, save_mean, save_invstd, true, eps,
                                              {mask[0], mask[1], mask[2]});
    return {std::get<0>(ref), std::get<1>(ref), std::get<2>(ref)};
  }
  const bool affine = w.defined();
  return run_variant(backward_variants()[v], grad_out, input, w, save_mean, save_invstd, mask[0],
                     affine && mask[1], affine && mask[2]);
}
