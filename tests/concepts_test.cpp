// Compile-only checks of the memory-state concept: every layer satisfies it, and types that
// lack a member of the contract do not. The test binary only reports that it compiled.

#include <gtest/gtest.h>

#include <seqmem/seqmem.hpp>

namespace seqmem::test {
namespace {

template <class Scalar>
constexpr bool layers_satisfy_concepts() {
  static_assert(SequenceMemory<LinearAttention<Scalar>>);
  static_assert(SequenceMemory<SoftmaxAttention<Scalar>>);
  static_assert(SequenceMemory<DeltaNet<Scalar>>);
  static_assert(SequenceMemory<TTTLinear<Scalar>>);
  static_assert(SequenceMemory<TTTMLP<Scalar>>);
  static_assert(SequenceMemory<TitansMemory<Scalar>>);
  static_assert(SequenceMemory<GatedLinearAttention<Scalar>>);
  static_assert(SequenceMemory<KimiDeltaAttention<Scalar>>);
  static_assert(SequenceMemory<GeneralizedDeltaRule<Scalar>>);
  static_assert(MultiHeadLayer<LinearAttention<Scalar>>);
  static_assert(MultiHeadLayer<SoftmaxAttention<Scalar>>);
  static_assert(MultiHeadLayer<DeltaNet<Scalar>>);
  static_assert(MultiHeadLayer<TTTLinear<Scalar>>);
  static_assert(MultiHeadLayer<TTTMLP<Scalar>>);
  static_assert(MultiHeadLayer<TitansMemory<Scalar>>);
  static_assert(MultiHeadLayer<GatedLinearAttention<Scalar>>);
  static_assert(MultiHeadLayer<KimiDeltaAttention<Scalar>>);
  static_assert(MultiHeadLayer<GeneralizedDeltaRule<Scalar>>);
  static_assert(PersistentLayer<LinearAttention<Scalar>>);
  static_assert(PersistentLayer<SoftmaxAttention<Scalar>>);
  static_assert(PersistentLayer<DeltaNet<Scalar>>);
  static_assert(PersistentLayer<TTTLinear<Scalar>>);
  static_assert(PersistentLayer<TTTMLP<Scalar>>);
  static_assert(PersistentLayer<TitansMemory<Scalar>>);
  static_assert(PersistentLayer<GatedLinearAttention<Scalar>>);
  static_assert(PersistentLayer<KimiDeltaAttention<Scalar>>);
  static_assert(PersistentLayer<GeneralizedDeltaRule<Scalar>>);
  return true;
}
static_assert(layers_satisfy_concepts<float>());

// Required gates are required at compile time: inputs without them do not compile.
template <class Layer>
concept QkvAlone = requires(const Matrix<typename Layer::Scalar>& x) {
  {typename Layer::Inputs{.q = x, .k = x, .v = x}};
};
static_assert(QkvAlone<LinearAttention<double>>);  // its only gate is optional
static_assert(QkvAlone<SoftmaxAttention<double>>);
static_assert(!QkvAlone<DeltaNet<double>>);              // beta
static_assert(!QkvAlone<TTTLinear<double>>);             // eta
static_assert(!QkvAlone<TitansMemory<double>>);          // theta, alpha, momentum
static_assert(!QkvAlone<GatedLinearAttention<double>>);  // log_decay (T×key_dim)
static_assert(!QkvAlone<KimiDeltaAttention<double>>);    // beta, log_decay
static_assert(!QkvAlone<GeneralizedDeltaRule<double>>);  // a, b, log_decay
static_assert(requires(const Matrix<double>& x, const Vector<double>& b) {
  DeltaNet<double>::Inputs{.q = x, .k = x, .v = x, .beta = b};
});
static_assert(requires(const Matrix<double>& x, const Vector<double>& b) {
  GatedLinearAttention<double>::Inputs{.q = x, .k = x, .v = x, .log_decay = x};
  KimiDeltaAttention<double>::Inputs{.q = x, .k = x, .v = x, .beta = b, .log_decay = x};
  GeneralizedDeltaRule<double>::Inputs{.q = x, .k = x, .v = x, .a = x, .b = x, .log_decay = x};
});
static_assert(layers_satisfy_concepts<double>());

// A complete minimal layer, and copies of it with one member missing.
struct Complete {
  using Scalar = double;
  struct Options {};
  struct Inputs {};
  struct State {};
  const Options& options() const { return options_; }
  State initial_state() const { return {}; }
  Matrix<double> forward(Form, const Inputs&, State&) const { return {}; }
  void forward(Form, const Inputs&, State&, MatrixRef<double>) const {}
  Options options_;
};
static_assert(SequenceMemory<Complete>);

struct NoInitialState {
  using Scalar = double;
  struct Options {};
  struct Inputs {};
  struct State {};
  const Options& options() const { return options_; }
  Matrix<double> forward(Form, const Inputs&, State&) const { return {}; }
  void forward(Form, const Inputs&, State&, MatrixRef<double>) const {}
  Options options_;
};
static_assert(!SequenceMemory<NoInitialState>);

struct NoForward {
  using Scalar = double;
  struct Options {};
  struct Inputs {};
  struct State {};
  const Options& options() const { return options_; }
  State initial_state() const { return {}; }
  Options options_;
};
static_assert(!SequenceMemory<NoForward>);

struct NoOutputViewForward {  // only the allocating overload
  using Scalar = double;
  struct Options {};
  struct Inputs {};
  struct State {};
  const Options& options() const { return options_; }
  State initial_state() const { return {}; }
  Matrix<double> forward(Form, const Inputs&, State&) const { return {}; }
  Options options_;
};
static_assert(!SequenceMemory<NoOutputViewForward>);

struct IntegerScalar {
  using Scalar = int;
  struct Options {};
  struct Inputs {};
  struct State {};
  const Options& options() const { return options_; }
  State initial_state() const { return {}; }
  Options options_;
};
static_assert(!SequenceMemory<IntegerScalar>);

static_assert(!MultiHeadLayer<Complete>);   // no check/head/output_dim/tokens
static_assert(!PersistentLayer<Complete>);  // no StateLayout: save_state/load_state refuse it

}  // namespace

TEST(Concepts, Compiled) {
  SUCCEED() << "the static_asserts above hold";
}

}  // namespace seqmem::test
