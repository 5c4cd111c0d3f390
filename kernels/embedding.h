// Embedding lookup and its backward. The backward is a scatter-add of rows
// into the weight gradient; it is deterministic (each row's contributions
// are summed in the order the ids appear, whatever the thread count) and
// race-free (ids are bucketed so each weight row has one owner thread).
#pragma once

#include "core/tensor.h"

namespace keel::kernels {

// weight (V, C), ids any shape of i32/i64 -> ids.shape + (C,). An id outside
// [0, V) is a keel::Error naming the id, its position in ids and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// dweight (V, C) += sum over positions p with ids[p] == v of dout[p, :], for
// each v; dout is ids.shape + (C,). Sums are formed in f64 and added once.
void embedding_backward(const Tensor& dout, const Tensor& ids, Tensor& dweight);

}  // namespace keel::kernels
