// The tensor-parallel layers against their serial twins under mpirun, for
// tp = the world and (at even worlds above 2) tp = 2 inside dp: the weights
// are the serial weights' boxes bit for bit, the forward equals the serial
// layer's (this rank's columns of it, or all of it), and every gradient (the
// weight shard against its box of the serial gradient, the bias, the input)
// equals the serial one.
//
// Tolerances: the same dot products over fewer or more columns at once;
// OpenBLAS may block them differently, so f32 rounding may differ: 1e-5
// relative with 1e-6 absolute for elements near zero.
#include "nn/tensor_parallel.h"

#include <gtest/gtest.h>

#include "tests/testing/gradcheck.h"

namespace keel::nn {
namespace {

using parallel::Axis;
using parallel::MeshShape;
using testing::all_close;
using testing::to_doubles;

constexpr double kRtol = 1e-5, kAtol = 1e-6;  // f32 blocking order (see top)

// The layouts to test at this world size: tp over all ranks, and tp = 2 x dp.
std::vector<MeshShape> layouts(int world) {
  std::vector<MeshShape> out = {MeshShape{1, 1, 1, world}};
  if (world > 2 && world % 2 == 0) out.push_back(MeshShape{world / 2, 1, 1, 2});
  return out;
}

Tensor random(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return randn(shape, g);
}

// What rank r of tp holds of `full` split along `dim`: its chunk of each of
// the `stride` segments, concatenated.
Tensor shard_of(const Tensor& full, int64_t dim, int rank, int tp, int64_t stride = 1) {
  const int64_t seg = full.size(dim) / stride, piece = seg / tp;
  std::vector<Tensor> parts;
  for (int64_t s = 0; s < stride; ++s)
    parts.push_back(full.narrow(dim, s * seg + rank * piece, piece).contiguous());
  return parts.size() == 1 ? parts[0] : concat(parts, dim);
}

void expect_close(const Tensor& got, const Tensor& want, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  EXPECT_TRUE(all_close(to_doubles(got), to_doubles(want), kRtol, kAtol)) << what;
}

class TensorParallel : public ::testing::Test {
 protected:
  void SetUp() override { world_ = parallel::mpi_world(); }
  std::unique_ptr<parallel::Communicator> world_;
};

TEST_F(TensorParallel, ColumnParallelLinearIsItsSerialTwin) {
  for (const MeshShape& shape : layouts(world_->size()))
    for (int64_t stride : {1, 3})
      for (bool gather : {false, true})
        for (bool sp : {false, true}) {
          if (gather && stride > 1) continue;  // refused (see below)
          SCOPED_TRACE(shape.str() + " stride " + std::to_string(stride) +
                       (gather ? " gathered" : "") + (sp ? " sequence parallel" : ""));
          parallel::ParallelContext ctx(*world_, shape);
          const int r = ctx.coord().tp, tp = shape.tp;
          const int64_t in = 6, out = 12 * stride;
          Generator g1(3), g2(3);
          Linear serial(in, out, true, g1, 0.5);
          ColumnParallelLinear col(in, out, true, ctx, g2, 0.5, gather, stride, sp);
          EXPECT_EQ(to_doubles(col.weight), to_doubles(shard_of(serial.weight, 0, r, tp, stride)))
              << "the weight is the serial weight's box, bit for bit";
          EXPECT_EQ(g1.offset(), g2.offset()) << "the generator moves as the serial draw's does";
          {
            NoGradGuard no_grad;  // a bias that is not zero, the same in both
            serial.bias.copy_(random({out}, 9));
            col.bias.copy_(shard_of(serial.bias, 0, r, tp, stride));
          }
          // Under sequence parallelism each rank passes its slice of T.
          Tensor x1 = random({2, 4, in}, 4), x2 = sp ? shard_of(x1, 1, r, tp) : x1.clone();
          x1.set_requires_grad(true);
          x2.set_requires_grad(true);
          Tensor rw = random({2, 4, out}, 5);
          Tensor y1 = serial.forward(x1), y2 = col.forward(x2);
          sum(mul(y1, rw)).backward();
          // This rank's part of the same loss; dx comes back summed over tp.
          sum(mul(y2, gather ? rw : shard_of(rw, 2, r, tp, stride))).backward();
          if (gather) {
            expect_close(y2, y1, "gathered output");
          } else {
            expect_close(y2, shard_of(y1, 2, r, tp, stride), "output columns");
          }
          // The gather's backward keeps this rank's chunk of dy, so the shard
          // gradients are the serial gradients' boxes either way.
          expect_close(col.weight.grad(), shard_of(serial.weight.grad(), 0, r, tp, stride), "dW");
          expect_close(col.bias.grad(), shard_of(serial.bias.grad(), 0, r, tp, stride), "db");
          expect_close(x2.grad(), sp ? shard_of(x1.grad(), 1, r, tp) : x1.grad(), "dx");
        }
}

TEST_F(TensorParallel, RowParallelLinearIsItsSerialTwin) {
  for (const MeshShape& shape : layouts(world_->size()))
    for (bool parallel_in : {true, false}) {
      SCOPED_TRACE(shape.str() + (parallel_in ? " parallel input" : " replicated input"));
      parallel::ParallelContext ctx(*world_, shape);
      const int r = ctx.coord().tp, tp = shape.tp;
      const int64_t in = 8 * tp, out = 5;
      Generator g1(7), g2(7);
      Linear serial(in, out, true, g1, 0.5);
      RowParallelLinear row(in, out, true, ctx, g2, 0.5, parallel_in);
      EXPECT_EQ(to_doubles(row.weight), to_doubles(shard_of(serial.weight, 1, r, tp)));
      {
        NoGradGuard no_grad;
        serial.bias.copy_(random({out}, 9));
        row.bias.copy_(serial.bias);
      }
      Tensor x1 = random({3, 4, in}, 4);
      Tensor x2 = parallel_in ? shard_of(x1, 2, r, tp) : x1.clone();
      x1.set_requires_grad(true);
      x2.set_requires_grad(true);
      Tensor rw = random({3, 4, out}, 5);
      Tensor y1 = serial.forward(x1), y2 = row.forward(x2);
      expect_close(y2, y1, "output (the same on every tp rank)");
      sum(mul(y1, rw)).backward();
      sum(mul(y2, rw)).backward();
      expect_close(row.weight.grad(), shard_of(serial.weight.grad(), 1, r, tp), "dW");
      expect_close(row.bias.grad(), serial.bias.grad(), "db (added once)");
      expect_close(x2.grad(), parallel_in ? shard_of(x1.grad(), 2, r, tp) : x1.grad(), "dx");
    }
}

TEST_F(TensorParallel, VocabParallelEmbeddingIsItsSerialTwin) {
  for (const MeshShape& shape : layouts(world_->size())) {
    SCOPED_TRACE(shape.str());
    parallel::ParallelContext ctx(*world_, shape);
    const int r = ctx.coord().tp, tp = shape.tp;
    const int64_t num = 16 * tp, dim = 6;
    Generator g1(2), g2(2);
    Embedding serial(num, dim, g1, 0.5);
    VocabParallelEmbedding vocab(num, dim, ctx, g2, 0.5);
    EXPECT_EQ(vocab.vocab_start(), r * 16);
    EXPECT_EQ(to_doubles(vocab.weight), to_doubles(shard_of(serial.weight, 0, r, tp)));
    // Ids across every rank's range, repeated ones included.
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 24; ++i) ids.push_back((i * 7 + 3) % num);
    ids.push_back(ids[0]);
    const Tensor id = from_vector<int64_t>(ids, {5, 5});
    Tensor y1 = serial.forward(id), y2 = vocab.forward(id);
    expect_close(y2, y1, "rows (the same on every tp rank)");
    Tensor rw = random({5, 5, dim}, 5);
    sum(mul(y1, rw)).backward();
    sum(mul(y2, rw)).backward();
    expect_close(vocab.weight.grad(), shard_of(serial.weight.grad(), 0, r, tp), "dW rows");
    // One rank holding every row is the serial embedding, with its own message.
    EXPECT_KEEL_ERROR(vocab.forward(from_vector<int64_t>({num}, {1})),
                      tp > 1 ? "outside the vocabulary" : "out of range");
  }
}

TEST_F(TensorParallel, SizesThatDoNotSplitAreRefused) {
  if (world_->size() < 2) GTEST_SKIP() << "needs tp >= 2";
  parallel::ParallelContext ctx(*world_, MeshShape{1, 1, 1, world_->size()});
  const int tp = world_->size();
  Generator g(1);
  const std::string odd = std::to_string(2 * tp + 1);
  EXPECT_KEEL_ERROR(ColumnParallelLinear(4, 2 * tp + 1, true, ctx, g), odd.c_str(), "tp");
  EXPECT_KEEL_ERROR(ColumnParallelLinear(4, 6 * tp, true, ctx, g, 0.02, true, 3), "gather_output",
                    "stride");
  EXPECT_KEEL_ERROR(RowParallelLinear(2 * tp + 1, 4, true, ctx, g), odd.c_str(), "tp");
  EXPECT_KEEL_ERROR(VocabParallelEmbedding(2 * tp + 1, 4, ctx, g), odd.c_str(), "pad it");
  RowParallelLinear row(4 * tp, 3, false, ctx, g);
  EXPECT_KEEL_ERROR(row.forward(random({2, 4 * tp}, 1)), "RowParallelLinear", "expected input");
}

}  // namespace
}  // namespace keel::nn
