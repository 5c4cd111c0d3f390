#include "nn/mamba.h"

#include <cmath>
#include <vector>

namespace keel::nn {

int64_t MambaConfig::inner() const { return int64_t(std::llround(expand * double(d_model))); }

int64_t MambaConfig::rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }

void MambaConfig::validate() const {
  KEEL_CHECK(d_model > 0, "model.mamba: the width (n_embd) must be positive, got ", d_model);
  KEEL_CHECK(d_state > 0 && d_state <= 256,
             "model.mamba.d_state must be in [1, 256] (the scan kernel's limit), got ", d_state);
  KEEL_CHECK(d_conv > 0, "model.mamba.d_conv must be positive, got ", d_conv);
  KEEL_CHECK(expand > 0, "model.mamba.expand must be positive, got ", expand);
  const double e = expand * double(d_model);
  KEEL_CHECK(std::fabs(e - std::round(e)) < 1e-9, "model.mamba.expand ", expand, " times n_embd ",
             d_model, " is ", e, ", not a whole number of inner channels");
  KEEL_CHECK(dt_rank >= 0, "model.mamba.dt_rank must be >= 0 (0: ceil(n_embd / 16)), got ",
             dt_rank);
  KEEL_CHECK(dt_min > 0 && dt_max >= dt_min,
             "model.mamba.dt_max must be >= model.mamba.dt_min > 0, got dt_min ", dt_min,
             " and dt_max ", dt_max);
  KEEL_CHECK(dt_init_floor >= 0, "model.mamba.dt_init_floor must be >= 0, got ", dt_init_floor);
}

MambaMixer::MambaMixer(const MambaConfig& cfg, Generator& gen) : cfg_(cfg) {
  cfg_.validate();
  const int64_t C = cfg_.d_model, Di = cfg_.inner(), N = cfg_.d_state, R = cfg_.rank();
  in_proj = register_module("in_proj",
                            std::make_shared<Linear>(C, 2 * Di, cfg_.bias, gen, cfg_.init_std));
  conv1d = register_module("conv1d",
                           std::make_shared<CausalConv1d>(Di, cfg_.d_conv, cfg_.conv_bias, gen));
  x_proj =
      register_module("x_proj", std::make_shared<Linear>(Di, R + 2 * N, false, gen, cfg_.init_std));
  // dt_proj: weight uniform in +-dt_rank^-1/2; bias softplus^-1(dt), dt
  // log-uniform in [dt_min, dt_max].
  dt_proj = register_module("dt_proj", std::make_shared<Linear>(R, Di, true, gen, cfg_.init_std));
  const double w = 1.0 / std::sqrt(double(R));
  dt_proj->weight.copy_(rand_uniform({Di, R}, -w, w, gen));
  std::vector<float> inv_dt(static_cast<size_t>(Di));
  const std::vector<float> r = rand_uniform({Di}, 0.0, 1.0, gen).to_vector<float>();
  const double lo = std::log(cfg_.dt_min), hi = std::log(cfg_.dt_max);
  for (int64_t d = 0; d < Di; ++d) {
    const double dt = std::max(std::exp(double(r[size_t(d)]) * (hi - lo) + lo), cfg_.dt_init_floor);
    inv_dt[size_t(d)] = float(dt + std::log(-std::expm1(-dt)));  // softplus(inv_dt) = dt
  }
  dt_proj->bias.copy_(from_vector<float>(inv_dt, {Di}));
  std::vector<float> a(size_t(Di * N));
  for (int64_t d = 0; d < Di; ++d)
    for (int64_t n = 0; n < N; ++n) a[size_t(d * N + n)] = float(std::log(double(n + 1)));
  A_log = register_parameter("A_log", from_vector<float>(a, {Di, N}));  // (D, N)
  D = register_parameter("D", ones({Di}));                              // (D)
  out_proj = register_module("out_proj",
                             std::make_shared<Linear>(Di, C, cfg_.bias, gen, cfg_.proj_init_std));
}

Tensor MambaMixer::forward(const Tensor& u) const {
  const int64_t C = cfg_.d_model, Di = cfg_.inner(), N = cfg_.d_state, R = cfg_.rank();
  KEEL_CHECK(u.dim() == 3 && u.size(2) == C, "MambaMixer: expected u (B, T, ", C, "), got ",
             u.describe());
  Tensor xz = transpose(in_proj->forward(u), 1, 2);                     // (B, 2D, T) view
  Tensor x = silu(conv1d->forward(narrow(xz, 1, 0, Di)));               // (B, D, T)
  Tensor z = contiguous(narrow(xz, 1, Di, Di));                         // (B, D, T)
  Tensor dbc = x_proj->forward(transpose(x, 1, 2));                     // (B, T, R + 2N)
  Tensor dt = linear(narrow(dbc, 2, 0, R), autocast(dt_proj->weight));  // (B, T, D), no bias
  kernels::SelectiveScanArgs a;
  a.u = x;
  a.delta = contiguous(transpose(dt, 1, 2));                    // (B, D, T)
  a.A = neg(exp(A_log));                                        // (D, N) f32
  a.B = contiguous(transpose(narrow(dbc, 2, R, N), 1, 2));      // (B, N, T)
  a.C = contiguous(transpose(narrow(dbc, 2, R + N, N), 1, 2));  // (B, N, T)
  a.D = D;
  a.z = z;
  a.delta_bias = dt_proj->bias;
  a.delta_softplus = true;
  Tensor y = keel::selective_scan(a).first;      // (B, D, T)
  return out_proj->forward(transpose(y, 1, 2));  // (B, T, C)
}

MambaState MambaMixer::initial_state(int64_t batch) const {
  const Device dev = A_log.device();
  MambaState s;
  s.conv = zeros({batch, cfg_.inner(), cfg_.d_conv - 1}, in_proj->weight.dtype(), dev);
  s.ssm = zeros({batch, cfg_.inner(), cfg_.d_state}, DType::F32, dev);
  return s;
}

Tensor MambaMixer::step(const Tensor& u, MambaState& s) const {
  NoGradGuard no_grad;
  const int64_t C = cfg_.d_model, Di = cfg_.inner(), N = cfg_.d_state, R = cfg_.rank();
  KEEL_CHECK(u.dim() == 2 && u.size(1) == C, "MambaMixer::step: expected u (B, ", C, "), got ",
             u.describe());
  Tensor xz = in_proj->forward(u);  // (B, 2D)
  Tensor x = narrow(xz, 1, 0, Di), z = narrow(xz, 1, Di, Di);
  // The conv's window: the last d_conv - 1 inputs, then this one.
  Tensor window = concat({s.conv, unsqueeze(x, 2)}, 2);  // (B, D, d_conv)
  s.conv = contiguous(narrow(window, 2, 1, cfg_.d_conv - 1));
  Tensor xc = sum(mul(window, autocast(conv1d->weight)), {2});  // (B, D)
  if (conv1d->bias.defined()) xc = add(xc, autocast(conv1d->bias));
  xc = silu(xc);
  Tensor dbc = x_proj->forward(xc);  // (B, R + 2N)
  Tensor delta = to_dtype(
      softplus(linear(narrow(dbc, 1, 0, R), autocast(dt_proj->weight), autocast(dt_proj->bias))),
      DType::F32);                                             // (B, D)
  Tensor Bm = to_dtype(narrow(dbc, 1, R, N), DType::F32);      // (B, N)
  Tensor Cm = to_dtype(narrow(dbc, 1, R + N, N), DType::F32);  // (B, N)
  Tensor x32 = to_dtype(xc, DType::F32);                       // (B, D)
  Tensor A = neg(exp(A_log));                                  // (D, N)
  s.ssm = add(mul(exp(mul(unsqueeze(delta, 2), A)), s.ssm),
              mul(unsqueeze(mul(delta, x32), 2), unsqueeze(Bm, 1)));    // (B, D, N)
  Tensor y = add(sum(mul(s.ssm, unsqueeze(Cm, 1)), {2}), mul(x32, D));  // (B, D)
  y = mul(to_dtype(y, xc.dtype()), silu(z));
  return out_proj->forward(y);  // (B, C)
}

}  // namespace keel::nn
