// Differentiable collectives in Megatron-LM's vocabulary: each is an autograd
// op whose backward is the conjugate collective over the same communicator.
//
//   op                          forward                    backward
//   copy_to_region              identity                   all-reduce (sum)
//   reduce_from_region          all-reduce (sum)           identity
//   scatter_to_region           keep own chunk of dim      all-gather along dim
//   gather_from_region          all-gather along dim       keep own chunk of dim
//   reduce_scatter_to_region    reduce-scatter along dim   all-gather along dim
//   gather_from_sequence_region all-gather along dim       reduce-scatter along dim
//   all_to_all_region           split dim a, concat dim b  split dim b, concat dim a
//   all_to_all_rows             rows to ranks by counts    rows back by the swapped counts
//
// Rank r's chunk along `dim` is [r*c, (r+1)*c) with c = size(dim) / size();
// gathers place rank r's tensor at chunk r whatever the dim. Every rank must
// pass tensors of the same shape (the rows variant: matching counts), call
// in the same order, and run backward. The communicator is held by pointer
// in the graph and must outlive the backward pass. Inputs may be views; the
// tensors handed to the communicator are contiguous copies where needed.
// Host tensors go through the MPI backend, device tensors through NCCL.
#pragma once

#include <vector>

#include "autograd/autograd.h"
#include "parallel/communicator.h"

namespace keel::parallel {

Tensor copy_to_region(const Tensor& x, Communicator& comm);
Tensor reduce_from_region(const Tensor& x, Communicator& comm);
// x.size(dim) must divide by comm.size().
Tensor scatter_to_region(const Tensor& x, int64_t dim, Communicator& comm);
Tensor gather_from_region(const Tensor& x, int64_t dim, Communicator& comm);
// Sequence parallelism: x.size(dim) must divide by comm.size().
Tensor reduce_scatter_to_region(const Tensor& x, int64_t dim, Communicator& comm);
Tensor gather_from_sequence_region(const Tensor& x, int64_t dim, Communicator& comm);

// Splits x along split_dim into comm.size() chunks, sends chunk j to rank j,
// and concatenates the chunks received from ranks 0..n-1 along concat_dim
// (as Ulysses-style sequence <-> head exchanges): the result has
// size(split_dim) / n and size(concat_dim) * n (split_dim may equal concat_dim).
Tensor all_to_all_region(const Tensor& x, int64_t split_dim, int64_t concat_dim,
                         Communicator& comm);
// Rows of x (dim 0) go to ranks in order: the first send_rows[0] rows to rank
// 0, the next send_rows[1] to rank 1, ...; the result stacks recv_rows[r]
// rows from each rank r (as expert dispatch). x.size(0) == sum(send_rows);
// the peers' counts must agree (my send_rows[r] == rank r's recv_rows[me]).
Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_rows,
                       const std::vector<int64_t>& recv_rows, Communicator& comm);

}  // namespace keel::parallel
