#include "tests/testing/golden.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "trainer/optim.h"

namespace keel::testing {

GoldenFile::GoldenFile(std::string path) : path_(std::move(path)) {
  id_ = H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
}

GoldenFile::~GoldenFile() {
  if (id_ >= 0) H5Fclose(hid_t(id_));
}

Dataset GoldenFile::read(const std::string& name, bool ints) const {
  Dataset out;
  const hid_t file = hid_t(id_);
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
    ADD_FAILURE() << path_ << ": missing dataset " << name;
    return out;
  }
  hid_t ds = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  hid_t space = H5Dget_space(ds);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(size_t(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  int64_t n = 1;
  for (hsize_t d : dims) {
    out.shape.push_back(int64_t(d));
    n *= int64_t(d);
  }
  herr_t rc;
  if (ints) {
    out.ints.resize(size_t(n));
    rc = H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.ints.data());
  } else {
    out.values.resize(size_t(n));
    rc = H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.values.data());
  }
  EXPECT_GE(rc, 0) << path_ << ": cannot read " << name;
  H5Sclose(space);
  H5Dclose(ds);
  return out;
}

Dataset GoldenFile::floats(const std::string& name) const { return read(name, false); }

Tensor GoldenFile::ids(const std::string& name) const {
  Dataset d = read(name, true);
  return from_vector<int64_t>(d.ints, d.shape);  // i64
}

namespace {

template <typename T>
T read_attr(hid_t file, const std::string& path, const char* name, hid_t type, T fallback) {
  T v = fallback;
  hid_t a = H5Aopen(file, name, H5P_DEFAULT);
  EXPECT_GE(a, 0) << path << ": missing attribute " << name;
  if (a < 0) return v;
  EXPECT_GE(H5Aread(a, type, &v), 0) << path << ": cannot read attribute " << name;
  H5Aclose(a);
  return v;
}

}  // namespace

int64_t GoldenFile::int_attr(const char* name) const {
  return read_attr<int64_t>(hid_t(id_), path_, name, H5T_NATIVE_INT64, -1);
}

double GoldenFile::float_attr(const char* name) const {
  return read_attr<double>(hid_t(id_), path_, name, H5T_NATIVE_DOUBLE, NAN);
}

size_t GoldenFile::group_size(const std::string& name) const {
  hid_t g = H5Gopen2(hid_t(id_), name.c_str(), H5P_DEFAULT);
  EXPECT_GE(g, 0) << path_ << ": missing group " << name;
  if (g < 0) return 0;
  H5G_info_t info;
  H5Gget_info(g, &info);
  H5Gclose(g);
  return size_t(info.nlinks);
}

double max_abs_diff(const Doubles& a, const Doubles& b) {
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

double max_abs(const Doubles& a) {
  double m = 0;
  for (double x : a) m = std::max(m, std::fabs(x));
  return m;
}

void load_init(const GoldenFile& f, nn::Module& module) {
  nn::NamedTensors init;
  for (const auto& [name, p] : module.named_parameters()) {
    Dataset d = f.floats("/init/" + name);
    std::vector<float> v(d.values.begin(), d.values.end());  // exact: stored as f32
    init.emplace_back(name, from_vector<float>(v, d.shape));
  }
  if (::testing::Test::HasFailure()) return;
  EXPECT_EQ(f.group_size("/init"), init.size())
      << f.path() << ": /init and the module list different parameters";
  module.load_state_dict(init);  // refuses unknown names and shape mismatches
}

double expect_tensor_close(const std::string& what, const std::string& name, const Tensor& actual,
                           const Dataset& expected, double rtol, double atol) {
  EXPECT_EQ(actual.sizes(), expected.shape) << what << " " << name;
  if (actual.sizes() != expected.shape) return INFINITY;
  Doubles got = to_doubles(actual);
  EXPECT_TRUE(all_close(got, expected.values, rtol, atol)) << what << " " << name;
  return max_abs_diff(got, expected.values);
}

std::string golden_config_text(const GoldenFile& f, const std::string& section,
                               const std::string& extra, const std::vector<const char*>& ints,
                               const std::vector<const char*>& floats) {
  std::string text = "model { " + section + " { " + extra;
  for (const char* field : ints)
    text += std::string(" ") + field + ": " + std::to_string(f.int_attr(field));
  for (const char* field : floats)
    text += std::string(" ") + field + ": " + std::to_string(f.float_attr(field));
  return text +
         " } }\ndata { shards { train_files: 'unused.bin' } batch_size: 1 seq_len: 1 }\n"
         "train { steps: 1 seed: 1 }\n";
}

Trajectory run_adamw_trajectory(const GoldenFile& f, nn::Module& module,
                                const std::function<Tensor()>& loss) {
  trainer::AdamWConfig oc;
  oc.lr = f.float_attr("lr");
  oc.beta1 = f.float_attr("beta1");
  oc.beta2 = f.float_attr("beta2");
  oc.eps = f.float_attr("eps");
  oc.weight_decay = f.float_attr("weight_decay");
  const double max_norm = f.float_attr("max_norm");
  const int64_t steps = f.int_attr("steps");
  nn::NamedTensors params = module.named_parameters();
  trainer::AdamW opt(params, module.decayed_parameter_names(), oc);
  Trajectory out;
  for (int64_t s = 0; s < steps; ++s) {
    module.zero_grad();
    Tensor l = loss();
    l.backward();
    const double norm = trainer::global_grad_norm(params);
    opt.step(oc.lr, trainer::clip_coefficient(norm, max_norm));
    out.losses.push_back(l.item());
    out.norms.push_back(norm);
  }
  return out;
}

void expect_golden_step(const GoldenFile& f, nn::Module& module,
                        const std::function<Tensor()>& logits_fn,
                        const std::function<Tensor()>& loss_fn, const GoldenTolerances& tol) {
  Tensor logits;
  {
    NoGradGuard no_grad;
    logits = logits_fn();  // (B, T, V)
  }
  const Dataset ref_logits = f.floats("/ref/logits");
  ASSERT_EQ(logits.sizes(), ref_logits.shape);
  const Doubles got_logits = to_doubles(logits);
  EXPECT_TRUE(all_close(got_logits, ref_logits.values, tol.logits_rtol, tol.logits_atol))
      << "logits";
  Tensor loss = loss_fn();
  const double ref_loss = f.floats("/ref/loss").values.at(0);
  EXPECT_NEAR(loss.item(), ref_loss, tol.loss_atol) << "loss";
  loss.backward();
  double worst = 0;  // max over tensors of (max abs error / max |reference|)
  for (const auto& [name, p] : module.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << "no gradient for " << name;
    const Dataset g = f.floats("/ref/grad/" + name);
    const double scale = max_abs(g.values);
    ASSERT_GT(scale, 0) << "reference gradient of " << name << " is zero";
    const double err = expect_tensor_close("gradient of", name, p.grad(), g, tol.grad_rtol,
                                           tol.grad_atol_of_max * scale);
    worst = std::max(worst, err / scale);
  }
  std::cout << "[ golden ] max abs error: logits " << max_abs_diff(got_logits, ref_logits.values)
            << ", loss " << std::fabs(loss.item() - ref_loss)
            << "; gradients (relative to each tensor's max) " << worst << "\n";
}

void expect_golden_trajectory(const GoldenFile& f, nn::Module& module,
                              const std::function<Tensor()>& loss, const GoldenTolerances& tol) {
  const Trajectory tr = run_adamw_trajectory(f, module, loss);
  const Dataset ref_losses = f.floats("/ref/losses"), ref_norms = f.floats("/ref/grad_norms");
  EXPECT_TRUE(all_close(tr.losses, ref_losses.values, 0.0, tol.losses_atol)) << "losses per step";
  EXPECT_TRUE(all_close(tr.norms, ref_norms.values, tol.norm_rtol, 0.0))
      << "gradient norms per step";
  double worst = 0;
  for (const auto& [name, p] : module.named_parameters())
    worst =
        std::max(worst, expect_tensor_close("final weight", name, p, f.floats("/ref/final/" + name),
                                            tol.final_rtol, tol.final_atol));
  std::cout << "[ golden ] max abs error: losses " << max_abs_diff(tr.losses, ref_losses.values)
            << ", grad norms " << max_abs_diff(tr.norms, ref_norms.values) << ", final weights "
            << worst << "\n";
}

}  // namespace keel::testing
