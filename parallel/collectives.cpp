// Differentiable collectives. The communicator moves flat buffers with rank
// r's chunk at offset r*chunk ("rank-major"); a chunk boundary along a
// non-leading dim is not a memory boundary, so tensors are permuted into and
// out of rank-major order around the call: a tensor of shape
// (pre, n*c, post) along `dim` is exchanged as (n, pre, c, post).
#include "parallel/collectives.h"

namespace keel::parallel {

namespace {

using keel::detail::cat;

struct Split3 {
  int64_t pre = 1, mid = 1, post = 1;  // the shape folded around one dim
};

Split3 fold(const Shape& s, int64_t dim) {
  Split3 f;
  for (int64_t i = 0; i < int64_t(s.size()); ++i) {
    if (i < dim)
      f.pre *= s[size_t(i)];
    else if (i == dim)
      f.mid = s[size_t(i)];
    else
      f.post *= s[size_t(i)];
  }
  return f;
}

int64_t checked_chunk(const char* op, const Tensor& x, int64_t dim, const Communicator& comm) {
  const int64_t n = comm.size();
  KEEL_CHECK(x.size(dim) % n == 0, op, ": dim ", dim, " of ", x.describe(), " has size ",
             x.size(dim), ", not divisible by the ", n, " ranks of communicator '", comm.name(),
             "'");
  return x.size(dim) / n;
}

// x with size n*c along dim, as a flat contiguous buffer holding the n
// chunks one after another: (n, pre, c, post).
Tensor to_rank_major(const Tensor& x, int64_t dim, int64_t n) {
  const Split3 f = fold(x.sizes(), dim);
  if (f.pre == 1) return x.contiguous().reshape({x.numel()});  // chunks already adjacent
  return x.reshape({f.pre, n, f.mid / n, f.post})
      .permute({1, 0, 2, 3})
      .contiguous()
      .reshape({x.numel()});
}

// The inverse: a flat buffer (n, pre, c, post) of n chunks of shape `chunk`,
// as one tensor with chunk r at [r*c, (r+1)*c) along dim.
Tensor from_rank_major(const Tensor& buf, const Shape& chunk, int64_t dim, int64_t n) {
  Shape full = chunk;
  full[size_t(dim)] *= n;
  const Split3 f = fold(chunk, dim);
  if (f.pre == 1) return buf.reshape(full);
  return buf.view({n, f.pre, f.mid, f.post}).permute({1, 0, 2, 3}).contiguous().reshape(full);
}

Tensor own_chunk(const Tensor& x, int64_t dim, const Communicator& comm) {
  const int64_t c = x.size(dim) / comm.size();
  return x.narrow(dim, int64_t(comm.rank()) * c, c).clone();
}

Tensor gather_dim(const Tensor& x, int64_t dim, Communicator& comm) {
  const int64_t n = comm.size();
  Tensor in = x.contiguous();
  Tensor buf = empty({n * x.numel()}, x.dtype(), x.device());  // (n * numel) rank-major
  comm.all_gather_(in, buf);
  return from_rank_major(buf, x.sizes(), dim, n);
}

Tensor reduce_scatter_dim(const Tensor& x, int64_t dim, Communicator& comm) {
  const int64_t n = comm.size();
  Shape chunk = x.sizes();
  chunk[size_t(dim)] /= n;
  Tensor in = to_rank_major(x, dim, n);
  Tensor out = empty(chunk, x.dtype(), x.device());  // x's shape with dim / n
  comm.reduce_scatter_(in, out, ReduceOp::Sum);
  return out;
}

Tensor all_reduced(const Tensor& x, Communicator& comm) {
  Tensor y = x.clone();  // never reduce into a tensor someone else holds
  comm.all_reduce_(y, ReduceOp::Sum);
  return y;
}

Tensor exchange_dims(const Tensor& x, int64_t split_dim, int64_t concat_dim, Communicator& comm) {
  const int64_t n = comm.size();
  Shape chunk = x.sizes();
  chunk[size_t(split_dim)] /= n;
  Tensor in = to_rank_major(x, split_dim, n);
  Tensor buf = empty({x.numel()}, x.dtype(), x.device());  // (n, chunk) from ranks 0..n-1
  std::vector<int64_t> counts(size_t(n), x.numel() / n);
  comm.all_to_all_(in, counts, buf, counts);
  return from_rank_major(buf, chunk, concat_dim, n);
}

Tensor exchange_rows(const Tensor& x, const std::vector<int64_t>& send_rows,
                     const std::vector<int64_t>& recv_rows, Communicator& comm) {
  Shape row = x.sizes();
  row.erase(row.begin());
  const int64_t row_numel = shape_numel(row);
  std::vector<int64_t> send(send_rows.size()), recv(recv_rows.size());
  int64_t out_rows = 0;
  for (size_t r = 0; r < send_rows.size(); ++r) send[r] = send_rows[r] * row_numel;
  for (size_t r = 0; r < recv_rows.size(); ++r) {
    recv[r] = recv_rows[r] * row_numel;
    out_rows += recv_rows[r];
  }
  Shape out_shape = x.sizes();
  out_shape[0] = out_rows;
  Tensor in = x.contiguous();
  Tensor out = empty(out_shape, x.dtype(), x.device());  // (sum recv_rows, ...)
  comm.all_to_all_(in, send, out, recv);
  return out;
}

void check_rows(const char* op, const Tensor& x, const std::vector<int64_t>& send_rows,
                const std::vector<int64_t>& recv_rows, const Communicator& comm) {
  KEEL_CHECK(x.dim() >= 1, op, ": x (", x.describe(), ") needs at least one dim");
  for (const auto* rows : {&send_rows, &recv_rows}) {
    const char* role = rows == &send_rows ? "send_rows" : "recv_rows";
    KEEL_CHECK(int64_t(rows->size()) == comm.size(), op, ": ", role, " has ", rows->size(),
               " entries, communicator '", comm.name(), "' has ", comm.size(), " ranks");
    for (size_t r = 0; r < rows->size(); ++r)
      KEEL_CHECK((*rows)[r] >= 0, op, ": ", role, "[", r, "] = ", (*rows)[r], " is negative");
  }
  int64_t total = 0;
  for (int64_t s : send_rows) total += s;
  KEEL_CHECK(total == x.size(0), op, ": send_rows sum to ", total, " rows but x (", x.describe(),
             ") has ", x.size(0));
}

}  // namespace

Tensor copy_to_region(const Tensor& x, Communicator& comm) {
  Tensor y = x.detach();
  Communicator* c = &comm;
  record("copy_to_region", {x}, {y},
         [c](BackwardCtx& ctx) { return std::vector<Tensor>{all_reduced(ctx.grad(), *c)}; });
  return y;
}

Tensor reduce_from_region(const Tensor& x, Communicator& comm) {
  Tensor y = all_reduced(x, comm);
  record("reduce_from_region", {x}, {y},
         [](BackwardCtx& ctx) { return std::vector<Tensor>{ctx.grad()}; });
  return y;
}

Tensor scatter_to_region(const Tensor& x, int64_t dim, Communicator& comm) {
  dim = normalize_dim(dim, x.dim());
  checked_chunk("scatter_to_region", x, dim, comm);
  Tensor y = own_chunk(x, dim, comm);
  Communicator* c = &comm;
  record("scatter_to_region", {x}, {y}, [c, dim](BackwardCtx& ctx) {
    return std::vector<Tensor>{gather_dim(ctx.grad(), dim, *c)};
  });
  return y;
}

Tensor gather_from_region(const Tensor& x, int64_t dim, Communicator& comm) {
  dim = normalize_dim(dim, x.dim());
  Tensor y = gather_dim(x, dim, comm);
  Communicator* c = &comm;
  record("gather_from_region", {x}, {y}, [c, dim](BackwardCtx& ctx) {
    return std::vector<Tensor>{own_chunk(ctx.grad(), dim, *c)};
  });
  return y;
}

Tensor reduce_scatter_to_region(const Tensor& x, int64_t dim, Communicator& comm) {
  dim = normalize_dim(dim, x.dim());
  checked_chunk("reduce_scatter_to_region", x, dim, comm);
  Tensor y = reduce_scatter_dim(x, dim, comm);
  Communicator* c = &comm;
  record("reduce_scatter_to_region", {x}, {y}, [c, dim](BackwardCtx& ctx) {
    return std::vector<Tensor>{gather_dim(ctx.grad(), dim, *c)};
  });
  return y;
}

Tensor gather_from_sequence_region(const Tensor& x, int64_t dim, Communicator& comm) {
  dim = normalize_dim(dim, x.dim());
  Tensor y = gather_dim(x, dim, comm);
  Communicator* c = &comm;
  record("gather_from_sequence_region", {x}, {y}, [c, dim](BackwardCtx& ctx) {
    return std::vector<Tensor>{reduce_scatter_dim(ctx.grad(), dim, *c)};
  });
  return y;
}

Tensor all_to_all_region(const Tensor& x, int64_t split_dim, int64_t concat_dim,
                         Communicator& comm) {
  split_dim = normalize_dim(split_dim, x.dim(), "split_dim");
  concat_dim = normalize_dim(concat_dim, x.dim(), "concat_dim");
  checked_chunk("all_to_all_region", x, split_dim, comm);
  Tensor y = exchange_dims(x, split_dim, concat_dim, comm);
  Communicator* c = &comm;
  record("all_to_all_region", {x}, {y}, [c, split_dim, concat_dim](BackwardCtx& ctx) {
    return std::vector<Tensor>{exchange_dims(ctx.grad(), concat_dim, split_dim, *c)};
  });
  return y;
}

Tensor all_to_all_rows(const Tensor& x, const std::vector<int64_t>& send_rows,
                       const std::vector<int64_t>& recv_rows, Communicator& comm) {
  check_rows("all_to_all_rows", x, send_rows, recv_rows, comm);
  Tensor y = exchange_rows(x, send_rows, recv_rows, comm);
  Communicator* c = &comm;
  record("all_to_all_rows", {x}, {y}, [c, send_rows, recv_rows](BackwardCtx& ctx) {
    return std::vector<Tensor>{exchange_rows(ctx.grad(), recv_rows, send_rows, *c)};
  });
  return y;
}

}  // namespace keel::parallel
