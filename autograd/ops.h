// Differentiable ops as free functions. Each records a node on the tape when
// grad mode is on and an input requires a gradient; the node saves only what
// its backward needs. Shapes follow the kernels (kernels/<op>.h).
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "autograd/autograd.h"
#include "kernels/dropout.h"
#include "kernels/selective_scan.h"

namespace keel {

// ---- views (autograd/views.cpp) ----
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor contiguous(const Tensor& x);
Tensor to_dtype(const Tensor& x, DType dtype);  // gradient converted back

// ---- elementwise with broadcasting (autograd/elementwise.cpp) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, double exponent);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
Tensor rsub_scalar(double s, const Tensor& a);  // s - a
Tensor rdiv_scalar(double s, const Tensor& a);  // s / a
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor softplus(const Tensor& x);
Tensor gelu(const Tensor& x);       // exact (erf)
Tensor gelu_tanh(const Tensor& x);  // tanh approximation (GPT-2)
Tensor relu(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sin(const Tensor& x);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(double s, const Tensor& a);

// ---- reductions (autograd/reduce.cpp, softmax in autograd/softmax.cpp); dims empty = all ----
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, int64_t correction = 1,
           bool keepdim = false);
// (values, indices); the gradient flows to the selected element.
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// ---- linear algebra (autograd/matmul.cpp) ----
// (..., M, K) @ (..., K, N) -> (..., M, N); batch dims broadcast; 1-D operands
// are promoted as in NumPy. Transposed views go to BLAS without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x @ w^T + b, with w (N, K) as nn.Linear stores it; bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// ---- indexing and joining (autograd/index.cpp; embedding in autograd/embedding.cpp) ----
// weight (V, C), ids any shape of i32/i64 -> ids.shape + (C,)
Tensor embedding(const Tensor& weight, const Tensor& ids);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);

// ---- fused normalisation (autograd/layernorm.cpp, rmsnorm.cpp); over the last dim ----
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

// ---- losses (autograd/cross_entropy.cpp) ----
// logits (N, V) (or (..., V)), targets (N) i32/i64. Mean over non-ignored rows.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0.0);

// ---- dropout (autograd/dropout.cpp): mask from the Philox stream ----
// Element at coordinates c of x draws the uniform of its row-major index in
// the logical tensor, Σ_d (start_d + c_d) · logical_stride_d, where `box`
// (kernels/dropout.h) gives the logical shape and x's start (empty: x is
// all of it). A shard of any layout (batch, sequence, heads, channels) that
// passes its box draws exactly its part of the unsharded mask. The box is
// x's place in this data-parallel rank's tensor: a DropoutShardGuard (below)
// then places that tensor on dim 0 of the serial batch.
using kernels::DropoutBox;
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen, const DropoutBox& box);
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);  // the whole tensor
Tensor dropout(const Tensor& x, double p, bool training);  // default generator, whole tensor

// While alive on this thread, dropout draws its mask as shard `index` of
// `count` equal shards along dim 0 of a tensor `count` times larger: the
// box's logical dim 0 is multiplied by count and its start moved by index
// times the local logical dim 0. Without a box element i of x is element
// index * numel(x) + i of the serial tensor. A data-parallel rank that holds
// rows [r*n, (r+1)*n) of the serial batch thereby draws exactly the serial
// run's mask for every batch-leading activation.
class DropoutShardGuard {
 public:
  DropoutShardGuard(int64_t index, int64_t count);
  ~DropoutShardGuard();
  DropoutShardGuard(const DropoutShardGuard&) = delete;
  DropoutShardGuard& operator=(const DropoutShardGuard&) = delete;

 private:
  int64_t prev_index_, prev_count_;
};

// ---- attention (autograd/attention.cpp) ----
// q, k, v (B, H, T, D) -> (out (B, H, T, D), lse (B, H, T) f32).
// scale defaults to 1/sqrt(D) when <= 0.
std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                    double scale = 0.0);
// The same attention formed from matmul, softmax and dropout, with dropout
// (p, training, gen) on the probabilities (B, H, Tq, Tk), which it
// materialises: the path for attention dropout, which the fused op lacks.
// Same layout, causal alignment and scale; returns out (B, H, Tq, D).
// `box`: where these heads' probabilities lie in the logical (B, H, Tq, Tk)
// tensor (tensor parallelism splits the heads), so a shard draws its part
// of the serial mask.
Tensor attention_unfused(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                         double scale, double dropout_p, bool training, Generator& gen,
                         const DropoutBox& box = {});

// ---- depthwise causal conv1d (autograd/conv1d.cpp) ----
// x (B, C, T), weight (C, K), bias (C) or undefined:
// y[b,c,t] = bias[c] + sum_k weight[c,k] * x[b,c,t-(K-1)+k]   (zero padded on the left)
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- FFT long convolution (autograd/fftconv.cpp) ----
// u (B, C, T), k (C, L) with 1 <= L <= T, D (C) or undefined:
// y[b,c,t] = sum_{s <= min(t, L-1)} k[c,s] * u[b,c,t-s] + D[c] * u[b,c,t]   (causal, by FFT)
Tensor fftconv(const Tensor& u, const Tensor& k, const Tensor& D = Tensor());

// ---- selective scan (autograd/selective_scan.cpp; Mamba-1, kernels/selective_scan.h) ----
// u, delta (B, D, T), A (D, N), B, C (B, N, T); optional D, delta_bias (D), z (B, D, T),
// h0 (B, D, N). Returns {y (B, D, T) in u's dtype, last_state (B, D, N) f32}, both
// differentiable, in every defined tensor of `a`. Call it qualified, keel::selective_scan(a):
// argument-dependent lookup also finds kernels::selective_scan, which takes the same argument.
std::pair<Tensor, Tensor> selective_scan(const kernels::SelectiveScanArgs& a);

// ---- activation recomputation (autograd/checkpoint.cpp) ----
// Runs fn without keeping its intermediates; backward reruns fn to rebuild
// them, with every random stream fn draws from back at its position of the
// forward (the default generator and each of `generators`, as Megatron's
// checkpoint restores its RNG tracker's), so dropout replays its masks.
// Parameters fn uses get their gradients as usual.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Generator*>& generators = {});

}  // namespace keel
