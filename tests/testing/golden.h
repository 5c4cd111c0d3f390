// Reading the golden files of tests/golden/ (written by the float64 PyTorch
// re-implementations in scripts/reference/), and the checks every family's
// golden test runs: start a module from the file's /init weights, compare a
// tensor per name, run the reference's AdamW trajectory.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "recipes/recipe.h"
#include "tests/testing/gradcheck.h"

namespace keel::testing {

struct Dataset {
  Shape shape;
  Doubles values;             // float datasets, converted by HDF5 to double
  std::vector<int64_t> ints;  // integer datasets
};

// A golden file opened read-only (HDF5 C API). Missing datasets or
// attributes are test failures naming the file and the item.
class GoldenFile {
 public:
  explicit GoldenFile(std::string path);
  ~GoldenFile();
  GoldenFile(const GoldenFile&) = delete;
  GoldenFile& operator=(const GoldenFile&) = delete;
  bool ok() const { return id_ >= 0; }
  const std::string& path() const { return path_; }

  Dataset floats(const std::string& name) const;
  Tensor ids(const std::string& name) const;  // integer dataset as an i64 tensor
  int64_t int_attr(const char* name) const;
  double float_attr(const char* name) const;
  size_t group_size(const std::string& name) const;  // links in a group

 private:
  Dataset read(const std::string& name, bool ints) const;
  std::string path_;
  int64_t id_ = -1;  // hid_t
};

double max_abs_diff(const Doubles& a, const Doubles& b);
double max_abs(const Doubles& a);

// Replaces every parameter of `module` by /init/<name> (f32, exact) and
// checks that /init lists no others.
void load_init(const GoldenFile& f, nn::Module& module);

// Compares one parameter-shaped tensor with `expected`, naming it on
// failure; returns the largest absolute error.
double expect_tensor_close(const std::string& what, const std::string& name, const Tensor& actual,
                           const Dataset& expected, double rtol, double atol);

// Runs `steps` AdamW steps (the file's lr, betas, eps, weight decay on
// `module`'s decayed parameters, global-norm clipping at max_norm) of
// `loss`, as the reference script did; returns the losses and the gradient
// norms before clipping, per step.
struct Trajectory {
  Doubles losses, norms;
};
Trajectory run_adamw_trajectory(const GoldenFile& f, nn::Module& module,
                                const std::function<Tensor()>& loss);

// The checks of a family's golden test, with each bound's reason at the
// caller: the forward (logits (B, T, V) against /ref/logits, the loss
// against /ref/loss), every parameter's gradient against /ref/grad/<name>
// (atol relative to each tensor's largest reference entry), then the AdamW
// trajectory (/ref/losses, /ref/grad_norms, /ref/final/<name>). They print
// the largest errors seen.
struct GoldenTolerances {
  double logits_rtol, logits_atol, loss_atol;
  double grad_rtol, grad_atol_of_max;
  double norm_rtol, losses_atol, final_rtol, final_atol;
};
void expect_golden_step(const GoldenFile& f, nn::Module& module,
                        const std::function<Tensor()>& logits, const std::function<Tensor()>& loss,
                        const GoldenTolerances& tol);
void expect_golden_trajectory(const GoldenFile& f, nn::Module& module,
                              const std::function<Tensor()>& loss, const GoldenTolerances& tol);

// The config a golden file describes: model { <section> { <extra> <name>:
// <attribute> ... } } with the named integer and float attributes, and
// placeholder data and train sections (the weights come from /init).
std::string golden_config_text(const GoldenFile& f, const std::string& section,
                               const std::string& extra, const std::vector<const char*>& ints,
                               const std::vector<const char*>& floats);

// A family's golden test: SetUp calls open(), which builds the model as
// every model is built, through the family registry from the file's config,
// checks it is an LM, replaces its parameters by /init and reads the batch.
template <typename LM>
class GoldenRecipeTest : public ::testing::Test {
 protected:
  void open(const std::string& path, const std::string& regenerate, const std::string& section,
            const std::string& extra, const std::vector<const char*>& ints,
            const std::vector<const char*>& floats = {}) {
    ASSERT_TRUE(std::filesystem::exists(path))
        << "golden file " << path << " is missing; regenerate it with " << regenerate;
    file_ = std::make_unique<GoldenFile>(path);
    ASSERT_TRUE(file_->ok()) << "cannot open " << path;
    const std::string text = golden_config_text(*file_, section, extra, ints, floats);
    recipe_ = recipes::make_recipe(trainer::parse_config(text, "golden config"), ctx_);
    model_ = std::dynamic_pointer_cast<LM>(recipe_.module);
    ASSERT_TRUE(model_) << "the " << section << " recipe did not build the expected model";
    load_init(*file_, *model_);
    ASSERT_FALSE(::testing::Test::HasFailure());
    ids_ = file_->ids("/batch/ids");
    targets_ = file_->ids("/batch/targets");
  }

  // The loss the trainer would call: the recipe's, on a batch of named tensors.
  Tensor loss() const {
    return recipe_.loss(trainer::Batch{{{"inputs", ids_}, {"targets", targets_}}}).loss;
  }

  std::unique_ptr<GoldenFile> file_;
  parallel::ParallelContext ctx_;
  recipes::Recipe recipe_;
  std::shared_ptr<LM> model_;
  Tensor ids_, targets_;
};

}  // namespace keel::testing
