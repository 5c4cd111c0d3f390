// HDF5 checkpoints: exact round trips per dtype (strided sources and
// destinations, scalars, empty tensors) with metadata, the table of contents,
// refusals (wrong shape or dtype, missing names, truncated, garbage,
// incomplete, wrong version), atomic replacement when a save fails, the
// latest/prune helpers, and box-shaped parts (shards of a ParamSpec layout,
// ZeRO pieces of a shard) through the collective API on a group of one that
// is not an MPI communicator.
#include "trainer/checkpoint.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "parallel/communicator.h"
#include "tests/testing/gradcheck.h"
#include "tests/testing/shards.h"

namespace keel::trainer {
namespace {

namespace fs = std::filesystem;
using testing::to_doubles;
using testing::uniform;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("keel_ckpt_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    // Every path, failing ones included, must have closed all its HDF5 objects.
    EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
    fs::remove_all(dir_);
  }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // A model and optimizer state covering every dtype and shape corner.
  static CheckpointData sample(int64_t step, uint64_t seed) {
    CheckpointData d;
    d.step = step;
    Tensor w = uniform({3, 4}, seed);                                  // (3, 4) f32
    Tensor wt = uniform({4, 3}, seed + 1).transpose(0, 1);             // (3, 4) f32, strided view
    Tensor h = uniform({5}, seed + 2).to(DType::BF16);                 // (5) bf16
    Tensor g = uniform({2, 2}, seed + 3).to(DType::F16);               // (2, 2) f16
    Tensor idx = arange(double(seed), double(seed) + 6).view({2, 3});  // (2, 3) i64
    Tensor i32 = arange(-3, 3, 1, DType::I32);                         // (6) i32
    Tensor mask = arange(0, 4, 1, DType::U8);                          // (4) u8
    Tensor scalar = full({}, 1.5 + double(seed));                      // () f32
    Tensor none = zeros({0, 3});                                       // (0, 3) f32
    d.model = {{"blocks.0.attn.qkv.weight", w},
               {"blocks.0.mlp.fc.weight", wt},
               {"ln_f.weight", h},
               {"wpe.weight", g},
               {"positions", idx},
               {"offsets", i32},
               {"mask", mask},
               {"temperature", scalar},
               {"empty", none}};
    d.optim = {{"blocks.0.attn.qkv.weight/m", uniform({3, 4}, seed + 10)},
               {"blocks.0.attn.qkv.weight/v", uniform({3, 4}, seed + 11, 0.0, 1.0)}};
    d.meta_text = {{"config", "model {\n  n_layer: 2\n  name: \"tiny\"\n}\n"},
                   {"tokenizer", "gpt2-bytes"},
                   {"empty_text", ""}};
    d.meta_int = {
        {"rng_seed", int64_t(seed)}, {"rng_offset", int64_t(1) << 40}, {"data_shard", -3}};
    d.meta_float = {{"lr", 6e-4}, {"loss_scale", 0.1 + 0.2}};
    return d;
  }

  // Same names, shapes and dtypes as `d`, filled with junk, meta zeroed.
  static CheckpointData blank_like(const CheckpointData& d) {
    CheckpointData out;
    out.step = -1;
    for (const auto& [n, t] : d.model) out.model.emplace_back(n, full(t.sizes(), 7, t.dtype()));
    for (const auto& [n, t] : d.optim) out.optim.emplace_back(n, full(t.sizes(), 7, t.dtype()));
    for (const auto& [n, v] : d.meta_text) out.meta_text.emplace_back(n, "junk");
    for (const auto& [n, v] : d.meta_int) out.meta_int.emplace_back(n, 0);
    for (const auto& [n, v] : d.meta_float) out.meta_float.emplace_back(n, 0.0);
    return out;
  }

  static void expect_same(const CheckpointData& a, const CheckpointData& b) {
    EXPECT_EQ(a.step, b.step);
    ASSERT_EQ(a.model.size(), b.model.size());
    for (size_t i = 0; i < a.model.size(); ++i) {
      EXPECT_EQ(a.model[i].second.dtype(), b.model[i].second.dtype()) << a.model[i].first;
      EXPECT_EQ(a.model[i].second.sizes(), b.model[i].second.sizes()) << a.model[i].first;
      EXPECT_EQ(to_doubles(a.model[i].second), to_doubles(b.model[i].second)) << a.model[i].first;
    }
    ASSERT_EQ(a.optim.size(), b.optim.size());
    for (size_t i = 0; i < a.optim.size(); ++i)
      EXPECT_EQ(to_doubles(a.optim[i].second), to_doubles(b.optim[i].second)) << a.optim[i].first;
    EXPECT_EQ(a.meta_text, b.meta_text);
    EXPECT_EQ(a.meta_int, b.meta_int);
    EXPECT_EQ(a.meta_float, b.meta_float);  // exact: float64 stored as float64
  }

  // The message of the keel::Error `f` raises ("" if it raises none).
  template <typename F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripIsExactForEveryDtypeAndMeta) {
  CheckpointData saved = sample(120, 1);
  std::string path = checkpoint_path(dir_.string(), 120);
  save_checkpoint(path, saved);
  ASSERT_TRUE(fs::exists(path));
  EXPECT_TRUE(is_complete_checkpoint(path));

  CheckpointData loaded = blank_like(saved);
  load_checkpoint(path, loaded);
  expect_same(loaded, saved);

  // Loading into a strided destination writes through the view.
  Tensor base = zeros({4, 3});  // (4, 3)
  CheckpointData into;
  into.model = {{"blocks.0.attn.qkv.weight", base.transpose(0, 1)}};
  load_checkpoint(path, into);
  EXPECT_EQ(to_doubles(base.transpose(0, 1)), to_doubles(saved.model[0].second));
  EXPECT_EQ(into.step, 120);
}

TEST_F(CheckpointTest, DeviceTensorsRoundTrip) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  CheckpointData host = sample(5, 11);
  CheckpointData dev = host;
  for (auto& [n, t] : dev.model) t = t.to(Device::cuda());
  for (auto& [n, t] : dev.optim) t = t.to(Device::cuda());
  std::string path = file("dev.h5");
  save_checkpoint(path, dev);
  CheckpointData loaded = blank_like(host);
  for (auto& [n, t] : loaded.model) t = t.to(Device::cuda());
  for (auto& [n, t] : loaded.optim) t = t.to(Device::cuda());
  load_checkpoint(path, loaded);
  for (const auto& [n, t] : loaded.model) EXPECT_TRUE(t.device().is_cuda()) << n;
  expect_same(loaded, host);
}

TEST_F(CheckpointTest, PartialLoadIgnoresNamesNotAskedFor) {
  CheckpointData saved = sample(7, 2);
  std::string path = file("a.h5");
  save_checkpoint(path, saved);
  CheckpointData into;
  into.model = {{"ln_f.weight", zeros({5}, DType::BF16)}};
  into.meta_int = {{"rng_offset", 0}};
  load_checkpoint(path, into);
  EXPECT_EQ(to_doubles(into.model[0].second), to_doubles(saved.model[2].second));
  EXPECT_EQ(into.meta_int[0].second, int64_t(1) << 40);
}

TEST_F(CheckpointTest, ListNamesShapesDtypesAndMeta) {
  std::string path = file("a.h5");
  save_checkpoint(path, sample(42, 3));
  auto entries = list_checkpoint(path);
  auto find = [&](const std::string& name) -> const TensorInfo* {
    for (const auto& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  };
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries[0].name, "step");
  EXPECT_EQ(entries[0].value, "42");

  const TensorInfo* w = find("/model/blocks.0.attn.qkv.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->kind, TensorInfo::Kind::kTensor);
  EXPECT_EQ(w->shape, (Shape{3, 4}));
  EXPECT_EQ(w->dtype, DType::F32);
  const TensorInfo* h = find("/model/ln_f.weight");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->dtype, DType::BF16);  // stored as f32, reported as what it was
  ASSERT_NE(find("/model/positions"), nullptr);
  EXPECT_EQ(find("/model/positions")->dtype, DType::I64);
  ASSERT_NE(find("/model/temperature"), nullptr);
  EXPECT_EQ(find("/model/temperature")->shape, Shape{});
  ASSERT_NE(find("/model/empty"), nullptr);
  EXPECT_EQ(find("/model/empty")->shape, (Shape{0, 3}));
  const TensorInfo* v = find("/optim/blocks.0.attn.qkv.weight/v");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->shape, (Shape{3, 4}));

  const TensorInfo* seed = find("/meta/rng_seed");
  ASSERT_NE(seed, nullptr);
  EXPECT_EQ(seed->kind, TensorInfo::Kind::kInt);
  EXPECT_EQ(seed->value, "3");
  ASSERT_NE(find("/meta/lr"), nullptr);
  EXPECT_EQ(find("/meta/lr")->kind, TensorInfo::Kind::kFloat);
  EXPECT_EQ(std::stod(find("/meta/lr")->value), 6e-4);
  ASSERT_NE(find("/meta/tokenizer"), nullptr);
  EXPECT_EQ(find("/meta/tokenizer")->kind, TensorInfo::Kind::kText);
  EXPECT_EQ(find("/meta/tokenizer")->value, "gpt2-bytes");
  // Groups are not entries: 1 step + 9 model + 2 optim + 3 text + 3 int + 2 float.
  EXPECT_EQ(entries.size(), 20u);
}

TEST_F(CheckpointTest, WrongShapeNamesTensorFileAndBothShapes) {
  std::string path = file("a.h5");
  save_checkpoint(path, sample(1, 4));
  CheckpointData into;
  into.model = {{"blocks.0.attn.qkv.weight", zeros({4, 3})}};
  std::string msg = error_of([&] { load_checkpoint(path, into); });
  EXPECT_NE(msg.find("blocks.0.attn.qkv.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 3)"), std::string::npos) << msg;

  CheckpointData wrong_dtype;
  wrong_dtype.model = {{"ln_f.weight", zeros({5})}};  // stored bf16, asked f32
  msg = error_of([&] { load_checkpoint(path, wrong_dtype); });
  EXPECT_NE(msg.find("ln_f.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bf16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32"), std::string::npos) << msg;

  CheckpointData wrong_rank;
  wrong_rank.optim = {{"blocks.0.attn.qkv.weight/m", zeros({12})}};
  msg = error_of([&] { load_checkpoint(path, wrong_rank); });
  EXPECT_NE(msg.find("(12,)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 4)"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, MissingTensorOrMetaIsNamed) {
  std::string path = file("a.h5");
  save_checkpoint(path, sample(1, 5));
  CheckpointData into;
  into.model = {{"lm_head.weight", zeros({2})}};
  std::string msg = error_of([&] { load_checkpoint(path, into); });
  EXPECT_NE(msg.find("lm_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  CheckpointData moments;
  moments.optim = {{"ln_f.weight/m", zeros({5}, DType::BF16)}};  // no moments for ln_f
  msg = error_of([&] { load_checkpoint(path, moments); });
  EXPECT_NE(msg.find("ln_f.weight/m"), std::string::npos) << msg;

  CheckpointData meta;
  meta.meta_int = {{"data_epoch", 0}};
  msg = error_of([&] { load_checkpoint(path, meta); });
  EXPECT_NE(msg.find("data_epoch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

  CheckpointData kind;
  kind.meta_int = {{"tokenizer", 0}};  // stored as text
  msg = error_of([&] { load_checkpoint(path, kind); });
  EXPECT_NE(msg.find("tokenizer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, MissingTruncatedAndGarbageFilesAreRefused) {
  std::string missing = file("nope.h5");
  std::string msg = error_of([&] { list_checkpoint(missing); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;

  std::string good = file("good.h5");
  save_checkpoint(good, sample(3, 6));
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_GT(bytes.size(), 2000u);
  for (size_t keep : {bytes.size() / 2, size_t(1000), size_t(4)}) {
    std::string cut = file("cut_" + std::to_string(keep) + ".h5");
    std::ofstream(cut, std::ios::binary).write(bytes.data(), std::streamsize(keep));
    CheckpointData into = blank_like(sample(3, 6));
    msg = error_of([&] { load_checkpoint(cut, into); });
    EXPECT_NE(msg.find(cut), std::string::npos) << msg;
    EXPECT_FALSE(is_complete_checkpoint(cut));
    EXPECT_THROW(list_checkpoint(cut), Error);
  }

  std::string garbage = file("garbage.h5");
  {
    std::ofstream out(garbage, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(char((i * 2654435761u) >> 13));
  }
  msg = error_of([&] { list_checkpoint(garbage); });
  EXPECT_NE(msg.find("not an HDF5 file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(garbage), std::string::npos) << msg;

  std::string empty_file = file("empty.h5");
  std::ofstream(empty_file).close();
  EXPECT_THROW(list_checkpoint(empty_file), Error);
  EXPECT_THROW(list_checkpoint(dir_.string()), Error);  // a directory
}

// Writes a bare HDF5 file with the given root attributes, as a crashed or
// foreign writer would leave it.
void write_bare_h5(const std::string& path, std::vector<std::pair<const char*, int64_t>> attrs) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  for (const auto& [name, value] : attrs) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(a, 0);
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT64, &value), 0);
    H5Aclose(a);
    H5Sclose(space);
  }
  hid_t g = H5Gcreate2(f, "/model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Gclose(g);
  ASSERT_GE(H5Fclose(f), 0);
}

TEST_F(CheckpointTest, IncompleteForeignAndNewerFilesAreRefused) {
  std::string incomplete = file("incomplete.h5");
  write_bare_h5(incomplete, {{"keel_checkpoint_version", 1}, {"step", 5}});
  std::string msg = error_of([&] { list_checkpoint(incomplete); });
  EXPECT_NE(msg.find("incomplete"), std::string::npos) << msg;
  EXPECT_NE(msg.find(incomplete), std::string::npos) << msg;
  EXPECT_FALSE(is_complete_checkpoint(incomplete));

  std::string unfinished = file("unfinished.h5");
  write_bare_h5(unfinished, {{"keel_checkpoint_version", 1}, {"step", 5}, {"complete", 0}});
  EXPECT_NE(error_of([&] { list_checkpoint(unfinished); }).find("incomplete"), std::string::npos);

  std::string foreign = file("foreign.h5");
  write_bare_h5(foreign, {});
  msg = error_of([&] { list_checkpoint(foreign); });
  EXPECT_NE(msg.find("not a keel checkpoint"), std::string::npos) << msg;

  std::string newer = file("newer.h5");
  write_bare_h5(newer, {{"keel_checkpoint_version", 2}, {"step", 5}, {"complete", 1}});
  msg = error_of([&] { list_checkpoint(newer); });
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, FailedSaveLeavesPreviousCheckpointIntact) {
  std::string path = checkpoint_path(dir_.string(), 10);
  CheckpointData first = sample(10, 7);
  save_checkpoint(path, first);

  // Fails after the other model tensors are already in the temporary file.
  CheckpointData broken = sample(20, 8);
  broken.model.back() = {"not_allocated", Tensor()};
  std::string msg = error_of([&] { save_checkpoint(path, broken); });
  EXPECT_NE(msg.find("not_allocated"), std::string::npos) << msg;

  CheckpointData duplicate = sample(20, 8);
  duplicate.optim.push_back(duplicate.optim[0]);
  msg = error_of([&] { save_checkpoint(path, duplicate); });
  EXPECT_NE(msg.find("twice"), std::string::npos) << msg;

  CheckpointData bad_name = sample(20, 8);
  bad_name.model[0].first = "blocks//weight";
  EXPECT_THROW(save_checkpoint(path, bad_name), Error);

  CheckpointData bad_meta = sample(20, 8);
  bad_meta.meta_int.emplace_back("config", 1);  // clashes with the text entry
  EXPECT_THROW(save_checkpoint(path, bad_meta), Error);

  std::string no_dir = (dir_ / "missing_dir" / "step_00000020.h5").string();
  msg = error_of([&] { save_checkpoint(no_dir, sample(20, 8)); });
  EXPECT_NE(msg.find(no_dir), std::string::npos) << msg;

  CheckpointData loaded = blank_like(first);
  load_checkpoint(path, loaded);
  expect_same(loaded, first);
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary left behind: " << entry.path();

  // A successful save replaces the old file.
  CheckpointData second = sample(11, 9);
  save_checkpoint(path, second);
  loaded = blank_like(second);
  load_checkpoint(path, loaded);
  expect_same(loaded, second);
}

TEST_F(CheckpointTest, LatestAndPrune) {
  EXPECT_EQ(latest_checkpoint(dir_.string()), "");
  EXPECT_EQ(latest_checkpoint((dir_ / "absent").string()), "");
  EXPECT_EQ(checkpoint_path("runs/x", 120), "runs/x/step_00000120.h5");
  EXPECT_EQ(checkpoint_path("d", 123456789), "d/step_123456789.h5");
  EXPECT_THROW(checkpoint_path("d", -1), Error);

  CheckpointData d = sample(0, 10);
  for (int64_t step : {5, 20, 100, 1000}) {
    d.step = step;
    save_checkpoint(checkpoint_path(dir_.string(), step), d);
  }
  // Lookalikes that must never be picked or deleted.
  std::string tmp = checkpoint_path(dir_.string(), 5000) + ".tmp.123";
  std::ofstream(tmp) << "partial";
  std::ofstream(file("step_9999.h5")) << "too few digits";
  std::ofstream(file("notes.txt")) << "x";
  EXPECT_EQ(latest_checkpoint(dir_.string()), checkpoint_path(dir_.string(), 1000));

  prune_checkpoints(dir_.string(), 2);
  EXPECT_FALSE(fs::exists(checkpoint_path(dir_.string(), 5)));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir_.string(), 20)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir_.string(), 100)));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir_.string(), 1000)));
  EXPECT_TRUE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(file("step_9999.h5")));
  EXPECT_TRUE(fs::exists(file("notes.txt")));

  // A corrupt file with a checkpoint name is newest by name (resume then
  // fails loudly rather than silently going back), but prune neither counts
  // nor deletes it.
  std::string corrupt = checkpoint_path(dir_.string(), 2000);
  std::ofstream(corrupt) << "not hdf5";
  EXPECT_EQ(latest_checkpoint(dir_.string()), corrupt);
  prune_checkpoints(dir_.string(), 1);
  EXPECT_TRUE(fs::exists(corrupt));
  EXPECT_TRUE(fs::exists(checkpoint_path(dir_.string(), 1000)));
  EXPECT_FALSE(fs::exists(checkpoint_path(dir_.string(), 100)));

  EXPECT_THROW(prune_checkpoints(dir_.string(), 0), Error);
  prune_checkpoints((dir_ / "absent").string(), 1);  // nothing to do
}

// A world of one without MPI, as parallel::LocalCommunicator is: the
// collective checkpoint API must take the serial path for it and never ask
// it to communicate. With size > 1 it stands for a non-MPI group, refused.
class LoneCommunicator : public parallel::Communicator {
 public:
  explicit LoneCommunicator(int size = 1) : size_(size) {}
  int rank() const override { return 0; }
  int size() const override { return size_; }
  std::string name() const override { return "lone"; }
  parallel::WorkPtr all_reduce(Tensor&, parallel::ReduceOp) override { return never(); }
  parallel::WorkPtr reduce_scatter(const Tensor&, Tensor&, parallel::ReduceOp) override {
    return never();
  }
  parallel::WorkPtr all_gather(const Tensor&, Tensor&) override { return never(); }
  parallel::WorkPtr broadcast(Tensor&, int) override { return never(); }
  parallel::WorkPtr send(const Tensor&, int, int) override { return never(); }
  parallel::WorkPtr recv(Tensor&, int, int) override { return never(); }
  parallel::WorkPtr all_to_all(const Tensor&, const std::vector<int64_t>&, Tensor&,
                               const std::vector<int64_t>&) override {
    return never();
  }
  void barrier() override { never(); }
  std::unique_ptr<parallel::Communicator> split(int, int, const std::string&) override {
    never();
    return nullptr;
  }

 private:
  static parallel::WorkPtr never() {
    ADD_FAILURE() << "a checkpoint on a group of one communicated";
    throw std::logic_error("unexpected communication");
  }
  int size_;
};

// Logical tensors and their layouts over two ranks: a dim-0, a dim-1 and a
// strided (qkv-like, stride 3) split, and a 3-d strided split of dim 1.
struct Sharded {
  std::string name;
  Tensor logical;
  int64_t dim, stride;
  nn::ParamSpec spec(int rank) const {
    return testing::split_spec(logical.sizes(), dim, stride, rank, 2);
  }
};

std::vector<Sharded> sharded_tensors() {
  return {{"a.weight", uniform({8, 6}, 31), 0, 1},
          {"b.weight", uniform({6, 8}, 32), 1, 1},
          {"attn.qkv.weight", uniform({12, 4}, 33), 0, 3},
          {"e.weight", uniform({2, 12, 3}, 34), 1, 3}};
}

TEST_F(CheckpointTest, BoxPartsOnAGroupOfOne) {
  LoneCommunicator lone;
  const auto ts = sharded_tensors();
  // Saved by one process as box parts: boxes out of flat order (row-major
  // order of their union is what `local` holds), and a scalar.
  CheckpointParts ck;
  ck.step = 9;
  for (const auto& t : ts) {
    const int64_t n = t.logical.numel();
    std::vector<Box> boxes = flat_range_boxes(t.logical.sizes(), n / 3, n);
    for (Box& b : flat_range_boxes(t.logical.sizes(), 0, n / 3)) boxes.push_back(b);
    ck.model.emplace_back(t.name, box_part(t.logical.sizes(), DType::F32, boxes, t.logical));
  }
  ck.model.emplace_back("temperature", whole_part(full({}, 0.5)));
  ck.meta_int = {{"seed", 4}};
  const std::string path = file("boxes.h5");
  save_checkpoint(path, ck, lone);

  // The serial API reads the whole tensors back.
  CheckpointData whole;
  for (const auto& t : ts) whole.model.emplace_back(t.name, zeros(t.logical.sizes()));
  load_checkpoint(path, whole);
  EXPECT_EQ(whole.step, 9);
  for (size_t i = 0; i < ts.size(); ++i)
    EXPECT_EQ(to_doubles(whole.model[i].second), to_doubles(ts[i].logical)) << ts[i].name;

  // Each rank's shard, as fake ranks in this process: the layout's local
  // tensor exactly; then ZeRO pieces of each shard (three uneven replicas).
  for (int r = 0; r < 2; ++r) {
    CheckpointParts shards;
    for (const auto& t : ts)
      shards.model.emplace_back(t.name,
                                shard_part(t.spec(r), full(nn::local_shape(t.spec(r)), 7.0)));
    load_checkpoint(path, shards, lone);
    for (size_t i = 0; i < ts.size(); ++i)
      EXPECT_EQ(to_doubles(shards.model[i].second.local),
                to_doubles(testing::expected_local(ts[i].logical, ts[i].spec(r))))
          << ts[i].name << " rank " << r;
    for (int k = 0; k < 3; ++k) {
      // Piece k of n local elements, overlapping its neighbours by one (loads may).
      auto piece = [k](int64_t n) {
        return std::pair<int64_t, int64_t>{n * k / 3 - (k > 0), n * (k + 1) / 3 + (k < 2)};
      };
      CheckpointParts pieces;
      for (const auto& t : ts) {
        const nn::ParamSpec s = t.spec(r);
        const auto [lo, hi] = piece(shape_numel(nn::local_shape(s)));
        pieces.model.emplace_back(
            t.name, box_part(t.logical.sizes(), DType::F32, nn::local_range_boxes(s, lo, hi),
                             zeros({hi - lo})));
      }
      load_checkpoint(path, pieces, lone);
      for (size_t i = 0; i < ts.size(); ++i) {
        Tensor local = testing::expected_local(ts[i].logical, ts[i].spec(r));
        const auto [lo, hi] = piece(local.numel());
        Tensor want = local.reshape({local.numel()}).narrow(0, lo, hi - lo);
        EXPECT_EQ(to_doubles(pieces.model[i].second.local), to_doubles(want))
            << ts[i].name << " rank " << r << " piece " << k;
      }
    }
  }
}

TEST_F(CheckpointTest, BoxPartsThatMissOrRepeatElementsAreRefused) {
  LoneCommunicator lone;
  const std::string path = checkpoint_path(dir_.string(), 3);
  Tensor w = uniform({4, 6}, 41);
  CheckpointParts good;
  good.model = {{"w", whole_part(w)}};
  save_checkpoint(path, good, lone);

  // A gap: one shard of two.
  nn::ParamSpec half = testing::split_spec({4, 6}, 1, 1, 0, 2);
  CheckpointParts gap;
  gap.model = {{"w", shard_part(half, zeros({4, 3}))}};
  std::string msg = error_of([&] { save_checkpoint(path, gap, lone); });
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("hold 12 elements in all but it has 24"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cover"), std::string::npos) << msg;

  // Boxes of one part that overlap, and a box outside the tensor.
  CheckpointParts overlap;
  overlap.model = {
      {"w", box_part({4, 6}, DType::F32, {Box{{0, 0}, {3, 6}}, Box{{2, 0}, {2, 6}}}, zeros({30}))}};
  msg = error_of([&] { save_checkpoint(path, overlap, lone); });
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("boxes [0:3, 0:6] and [2:4, 0:6] overlap"), std::string::npos) << msg;
  CheckpointParts outside;
  outside.model = {{"w", box_part({4, 6}, DType::F32, {Box{{0, 0}, {5, 6}}}, zeros({30}))}};
  msg = error_of([&] { load_checkpoint(path, outside, lone); });
  EXPECT_NE(msg.find("box [0:5, 0:6] does not lie in shape (4, 6)"), std::string::npos) << msg;

  // A local tensor that is not the spec's local shape, or holds too few elements.
  msg = error_of([&] {
    CheckpointParts wrong;
    wrong.model = {{"w", shard_part(half, zeros({4, 6}))}};
    load_checkpoint(path, wrong, lone);
  });
  EXPECT_NE(msg.find("is not the local shape (4, 3)"), std::string::npos) << msg;
  msg = error_of([&] {
    CheckpointParts few;
    few.model = {{"w", box_part({4, 6}, DType::F32, {Box{{0, 0}, {2, 6}}}, zeros({10}))}};
    load_checkpoint(path, few, lone);
  });
  EXPECT_NE(msg.find("has 10 elements for boxes of 12"), std::string::npos) << msg;

  // A group of several that is not MPI cannot run parallel HDF5.
  LoneCommunicator pair(2);
  msg = error_of([&] { save_checkpoint(path, good, pair); });
  EXPECT_NE(msg.find("needs an MPI communicator"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'lone'"), std::string::npos) << msg;

  // Nothing of the refused saves reached the file.
  CheckpointData check;
  check.model = {{"w", zeros({4, 6})}};
  load_checkpoint(path, check);
  EXPECT_EQ(to_doubles(check.model[0].second), to_doubles(w));
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
}

}  // namespace
}  // namespace keel::trainer
