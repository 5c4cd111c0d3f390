// Indexing and joining along one dim, with PyTorch semantics: gather and
// index_select read at given indices; scatter_add_ and index_add_ (their
// adjoints) add at given indices; concat, stack, split and chunk join and
// cut. Indices are i32 or i64 in [0, size): negative indices are not
// wrapped, and a bad one is a keel::Error naming the index, its position and
// the bound. Inputs may be strided or broadcast views.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace keel::kernels {

// index (L) (or 0-d, taken as (1)) -> x's shape with size(dim) = L:
// out.select(dim, i) = x.select(dim, index[i]).
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);

// index has x's number of dims and index.size(d) <= x.size(d) for d != dim;
// out has index's shape: out[i][j][k] = x[i][index[i][j][k]][k] (dim 1).
// Any dtype (an integer x is gathered too).
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);

// In place: out[i][index[i][j][k]][k] += src[i][j][k] (dim 1), over index's
// shape; index.size(d) <= src.size(d) for every d and <= out.size(d) for
// d != dim. Race-free and deterministic: threads split the positions off
// `dim`, which address distinct elements of out, and each walks `dim` in
// order. bf16/f16 out is accumulated in f32 and rounded once.
void scatter_add_(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// In place: out.select(dim, index[i]) += src.select(dim, i), with index (L)
// and src of out's shape but size(dim) = L. The adjoint of index_select.
void index_add_(Tensor& out, int64_t dim, const Tensor& index, const Tensor& src);

// Joins tensors of one dtype and device whose shapes agree except on dim.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// Joins same-shaped tensors along a new dim (in [-ndim-1, ndim]).
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);

// Views of x along dim, of the given sizes (which must sum to x.size(dim)).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
// Sizes torch.chunk cuts n into: pieces of ceil(n / chunks), the last one
// smaller, so there may be fewer than `chunks`; n == 0 gives `chunks` empties.
std::vector<int64_t> chunk_sizes(int64_t n, int64_t chunks);
// split(x, chunk_sizes(x.size(dim), chunks), dim).
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);

}  // namespace keel::kernels
