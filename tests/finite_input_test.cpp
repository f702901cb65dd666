// Non-finite input policy (README, "Errors and bad input"): by default every layer rejects
// q, k, v holding NaN or Inf, naming the tensor and the first bad (row, column), and leaves
// the state unchanged; with check_finite = false the value flows through to the outputs.

#include <gtest/gtest.h>

#include <limits>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

constexpr Index T = 5, d = 4;

// Runs `layer` on inputs where `bad` (q, k or v) holds `value` at (2, 3).
template <class Layer, class MakeInputs>
void expect_policy(const Layer& checked, const Layer& unchecked, MakeInputs make_inputs) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const char* name : {"q", "k", "v"}) {
    for (double value : {nan, inf, -inf}) {
      Rng rng(1);
      Matrix<double> q = uniform<double>(rng, T, d), k = uniform<double>(rng, T, d),
                     v = uniform<double>(rng, T, d);
      Matrix<double>& bad = name[0] == 'q' ? q : name[0] == 'k' ? k : v;
      bad(2, 3) = value;
      for (Form form : all_forms) {
        SCOPED_TRACE(::testing::Message() << name << " = " << value << ", " << to_string(form));
        auto state = checked.initial_state();
        try {
          (void)forward(checked, form, make_inputs(q, k, v), state);
          ADD_FAILURE() << "no exception";
        } catch (const seqmem::invalid_argument& e) {
          const std::string expected = std::string(name) + "(2, 3) must be finite";
          EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
        }
        auto state2 = unchecked.initial_state();
        const Matrix<double> out = forward(unchecked, form, make_inputs(q, k, v), state2);
        EXPECT_FALSE(out.allFinite()) << "a non-finite input must not vanish from the output";
      }
    }
  }
}

const Vector<double> kHalf = Vector<double>::Constant(T, 0.5);
const Vector<double> kSmall = Vector<double>::Constant(T, 0.05);
const Vector<double> kZero = Vector<double>::Zero(T);

TEST(FiniteInput, LinearAttention) {
  using L = LinearAttention<double>;
  expect_policy(L({.key_dim = d, .value_dim = d}),
                L({.key_dim = d, .value_dim = d, .check_finite = false}),
                [](const auto& q, const auto& k, const auto& v) {
                  return L::Inputs{.q = q, .k = k, .v = v};
                });
}

TEST(FiniteInput, SoftmaxAttention) {
  using L = SoftmaxAttention<double>;
  expect_policy(L({.key_dim = d, .value_dim = d}),
                L({.key_dim = d, .value_dim = d, .check_finite = false}),
                [](const auto& q, const auto& k, const auto& v) {
                  return L::Inputs{.q = q, .k = k, .v = v};
                });
}

TEST(FiniteInput, DeltaNet) {
  using L = DeltaNet<double>;
  expect_policy(L({.key_dim = d, .value_dim = d}),
                L({.key_dim = d, .value_dim = d, .check_finite = false}),
                [](const auto& q, const auto& k, const auto& v) {
                  return L::Inputs{.q = q, .k = k, .v = v, .beta = GateRef<double>(kHalf)};
                });
}

TEST(FiniteInput, TTT) {
  using L = TTTMLP<double>;
  expect_policy(
      L({.key_dim = d, .mini_batch = 8}), L({.key_dim = d, .mini_batch = 8, .check_finite = false}),
      [](const auto& q, const auto& k, const auto& v) {
        return L::Inputs{.q = q, .k = k, .v = v, .learning_rate = GateRef<double>(kSmall)};
      });
}

TEST(FiniteInput, Titans) {
  using L = TitansMemory<double>;
  expect_policy(
      L({.key_dim = d, .value_dim = d, .depth = 2, .mini_batch = 8}),
      L({.key_dim = d, .value_dim = d, .depth = 2, .mini_batch = 8, .check_finite = false}),
      [](const auto& q, const auto& k, const auto& v) {
        return L::Inputs{.q = q,
                         .k = k,
                         .v = v,
                         .learning_rate = GateRef<double>(kSmall),
                         .forgetting = GateRef<double>(kZero),
                         .momentum_decay = GateRef<double>(kHalf)};
      });
}

// detail::all_finite (the vectorized check behind check_finite): every position of row- and
// column-major matrices, of views whose rows are longer than the view (NaN beyond the view's
// columns must not count) and of strided views, each non-finite kind, and the largest finite
// values (whose x − x is still 0) and denormals must not be flagged. 130 columns reach the
// 4-vector loop of row_kernels::FinitePass at every vector width.
template <class Scalar>
void check_all_finite() {
  using Lim = std::numeric_limits<Scalar>;
  using ColMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  for (Index rows : {1, 3, 17}) {
    for (Index cols : {1, 5, 33, 130}) {
      Matrix<Scalar> m = Matrix<Scalar>::Constant(rows, cols, Lim::max());
      m(0, 0) = -Lim::max();
      m(rows - 1, cols - 1) = Lim::denorm_min();
      EXPECT_TRUE(detail::all_finite(m));
      EXPECT_TRUE(detail::all_finite(ColMajor(m)));
      for (Scalar bad : {Lim::quiet_NaN(), Lim::infinity(), -Lim::infinity()}) {
        for (Index i = 0; i < rows; ++i) {
          for (Index j = 0; j < cols; ++j) {
            Matrix<Scalar> b = m;
            b(i, j) = bad;
            ASSERT_FALSE(detail::all_finite(b)) << i << ", " << j << " = " << bad;
            ASSERT_FALSE(detail::all_finite(ColMajor(b))) << i << ", " << j;
            const MatrixCRef<Scalar> view = b.middleCols(j, 1);  // a strided view
            ASSERT_FALSE(detail::all_finite(view)) << i << ", " << j;
            Matrix<Scalar> wide = Matrix<Scalar>::Constant(rows, cols + 3, Lim::quiet_NaN());
            wide.leftCols(cols) = m;
            const MatrixCRef<Scalar> part = wide.leftCols(cols);  // rows longer than the view
            ASSERT_TRUE(detail::all_finite(part)) << i << ", " << j;
            wide(i, j) = bad;
            ASSERT_FALSE(detail::all_finite(part)) << i << ", " << j;
          }
        }
      }
    }
  }
  EXPECT_TRUE(detail::all_finite(Matrix<Scalar>(0, 4)));
}

TEST(FiniteInput, AllFiniteFloat) {
  check_all_finite<float>();
}
TEST(FiniteInput, AllFiniteDouble) {
  check_all_finite<double>();
}

}  // namespace
}  // namespace seqmem::test
