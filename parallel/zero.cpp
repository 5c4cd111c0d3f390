// ZeRO-1 sharded AdamW; see zero.h.
#include "parallel/zero.h"

#include <algorithm>
#include <cmath>

#include "kernels/adamw.h"

namespace keel::parallel {

ShardedAdamW::ShardedAdamW(GradientSync& sync, const std::vector<std::string>& decayed,
                           ShardedAdamWConfig cfg)
    : sync_(sync), cfg_(cfg) {
  KEEL_CHECK(sync.reduction() == GradReduction::ReduceScatter,
             "ShardedAdamW: the GradientSync must reduce-scatter (GradReduction::ReduceScatter)");
  const FlatLayout& layout = sync.layout();
  const int rank = sync.comm().rank();
  m_ = zeros({layout.shard}, DType::F32, sync.comm().device());  // (shard)
  v_ = zeros({layout.shard}, DType::F32, sync.comm().device());  // (shard)
  const NamedParams& params = sync.params();
  for (size_t i = 0; i < params.size(); ++i) {
    decay_.push_back(std::find(decayed.begin(), decayed.end(), params[i].first) != decayed.end());
    auto [begin, end] = layout.piece(i, rank);
    Piece piece;
    piece.param = i;
    piece.begin = begin;
    piece.end = end;
    const int64_t at = begin < end ? layout.offset[i] + begin - int64_t(rank) * layout.shard : 0;
    piece.m = m_.narrow(0, at, end - begin);  // (end - begin)
    piece.v = v_.narrow(0, at, end - begin);  // (end - begin)
    pieces_.push_back(std::move(piece));
  }
}

double ShardedAdamW::grad_norm() {
  return std::sqrt(sum_across(sync_.comm(), kernels::sum_squares(sync_.shard_grad())));
}

void ShardedAdamW::step(double lr, double grad_scale) {
  ++step_;
  const FlatLayout& layout = sync_.layout();
  Communicator& comm = sync_.comm();
  const int rank = comm.rank();
  const int64_t base = int64_t(rank) * layout.shard;
  const NamedParams& params = sync_.params();
  const Tensor& grad = sync_.shard_grad();
  Tensor& flat = sync_.flat_buffer();
  Tensor mine = flat.narrow(0, base, layout.shard);  // (shard): this rank's chunk of the gather

  for (const Piece& piece : pieces_) {
    if (piece.begin == piece.end) continue;
    const size_t i = piece.param;
    const int64_t len = piece.end - piece.begin;
    const int64_t at = layout.offset[i] + piece.begin - base;
    Tensor p = params[i].second.reshape({layout.numel[i]}).narrow(0, piece.begin, len);  // (len)
    if (sync_.has_grad(i)) {
      Tensor g = grad.narrow(0, at, len);  // (len)
      Tensor m = piece.m, v = piece.v;
      kernels::AdamWStep hp{
          lr,    cfg_.beta1, cfg_.beta2, cfg_.eps, decay_[i] ? cfg_.weight_decay : 0.0,
          step_, grad_scale};
      kernels::adamw_step(p, g, m, v, hp);
    }
    Tensor dst = mine.narrow(0, at, len);
    dst.copy_(p);
  }
  // Padding at the end of the last shard gathers as zeros.
  const int64_t pad_from = std::max<int64_t>(layout.total - base, 0);
  if (pad_from < layout.shard) mine.narrow(0, pad_from, layout.shard - pad_from).zero_();

  comm.all_gather(mine, flat)->wait();  // in place: `mine` is this rank's chunk of `flat`
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i].second.reshape({layout.numel[i]});  // (numel) view of the parameter
    p.copy_(flat.narrow(0, layout.offset[i], layout.numel[i]));
  }
}

}  // namespace keel::parallel
