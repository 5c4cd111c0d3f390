// Fused scaled-dot-product attention (FlashAttention's algorithm): the
// forward walks query blocks against key blocks with an online softmax and
// never forms the Tq x Tk score matrix; it returns the output and the
// per-row log-sum-exp, from which the backward recomputes each block's
// probabilities. Also the (output, lse) merge that ring attention uses to
// combine the partial results of key blocks held by different ranks.
//
// Layout: q (B, H, Tq, D), k and v (B, H, Tk, D). Inputs may be strided views
// (e.g. (B, T, H, D) transposed to (B, H, T, D)) and f32, bf16 or f16; the
// arithmetic is f32. Causal masking aligns the ends of the two sequences:
// query i sits at position i + (Tk - Tq) and sees keys j <= i + (Tk - Tq).
// Causal therefore needs Tq <= Tk (every query sees at least one key); with
// Tq == Tk it is the usual lower-triangular mask, and with Tq < Tk the queries
// are the last Tq positions of the sequence (decoding against a KV cache).
//
// On CUDA (kernels/cuda/attention.cu) bf16/f16 with D in {64, 128} run on
// tensor cores (P and dS are rounded to the input dtype before their
// products, as in FlashAttention-2); f32 and other D up to 256 run a slower
// f32 kernel; larger D is refused. The CUDA tiles are fixed, so
// AttentionBlocks only steer the CPU path. There is no attention dropout:
// autograd's attention_unfused forms the probabilities for it.
#pragma once

#include <utility>

#include "core/tensor.h"

namespace keel::kernels {

// Tile sizes of the blocked loops. Larger tiles amortise the per-block
// bookkeeping; smaller ones bound the scratch memory (block_q * block_k
// floats per thread for scores) and skip more of the causal mask.
struct AttentionBlocks {
  int64_t q = 64;
  int64_t k = 64;
};

// scale <= 0 means 1/sqrt(D).
// Returns (out (B, H, Tq, D) in q's dtype, lse (B, H, Tq) f32).
std::pair<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                            bool causal, double scale = 0.0,
                                            AttentionBlocks blocks = {});

struct AttentionGrads {
  Tensor dq;  // (B, H, Tq, D), q's dtype
  Tensor dk;  // (B, H, Tk, D)
  Tensor dv;  // (B, H, Tk, D)
};

// Gradients of (out, lse) = attention_forward(q, k, v, ...) given dout and,
// optionally, dlse (undefined = zero). out and lse must be what the forward
// returned for these inputs; the scale and causal flag must match.
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& dout,
                                  const Tensor& dlse, bool causal, double scale = 0.0,
                                  AttentionBlocks blocks = {});

// Ring-attention merge, in place and in f32: given the running pair
// (out (B, H, T, D) f32, lse (B, H, T) f32) over some keys and a block's pair
// (out_blk (B, H, T, D) any float dtype, lse_blk (B, H, T) f32) over other
// keys, makes (out, lse) the attention over the union:
//   lse' = logaddexp(lse, lse_blk)
//   out' = out * exp(lse - lse') + out_blk * exp(lse_blk - lse')
// A row with lse = -inf holds no keys yet (start from zeros and -inf). The
// running pair must be f32 so repeated merges do not round at every step.
void attention_merge_(Tensor& out, Tensor& lse, const Tensor& out_blk, const Tensor& lse_blk);

// One ring-attention step in one call: merges the attention of q over this
// K/V block into the running pair (out (B, H, Tq, D) f32, lse (B, H, Tq)
// f32; start from zeros and -inf), i.e. attention_forward followed by
// attention_merge_, with the block's output kept in f32. On CUDA the forward
// kernel starts its online softmax from the running pair and writes the
// merged result, with no separate pass. causal uses the end-aligned mask
// above between q and this block's keys.
void attention_forward_accumulate_(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                   Tensor& out, Tensor& lse, double scale = 0.0);

}  // namespace keel::kernels
