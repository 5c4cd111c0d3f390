// The column-parallel linear of sequence parallelism, fused with its
// all-gather so that only this rank's slice of the sequence is kept for the
// backward pass (Megatron-LM does the same): the forward gathers x along
// `dim` and multiplies; the backward gathers x again for the weight gradient
// and reduce-scatters the input gradient. Saving the gathered input instead
// would keep a whole (B, T, C) per linear and undo sequence parallelism's
// activation saving; the price is one more all-gather per linear in the
// backward (bench/README.md, tensor parallelism).
#pragma once

#include "autograd/autograd.h"
#include "parallel/communicator.h"

namespace keel::parallel {

// x (B, T / n, in) on each of comm's n ranks (its slice of dim), w (out, in),
// bias (out) or undefined -> (B, T, out) = linear(all_gather(x, dim), w, bias).
// x.size(dim) * n is the gathered length; every rank must call it and run its
// backward. The communicator must outlive the backward pass.
Tensor sequence_parallel_linear(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t dim,
                                Communicator& comm);

}  // namespace keel::parallel
