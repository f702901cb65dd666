#pragma once

/// @file
/// Elementwise activations of the layers from x, on Eigen arrays (vectorized):
///
///     sigmoid(z) = 1 / (1 + e^−z)     silu(z) = z · sigmoid(z)
///     softplus(z) = log(1 + e^z), and z itself for z > 20 (as PyTorch and fla)

#include <Eigen/Core>

/// The pieces the layers from x are made of: linear maps, the short convolution, norms,
/// activations and the rotary embedding (docs/layers.md).
namespace seqmem::pieces {

/// sigmoid(z) = 1 / (1 + e^−z), element-wise; returns an Eigen expression (evaluated lazily).
template <class Derived>
auto sigmoid(const Eigen::ArrayBase<Derived>& z) {
  using Scalar = typename Derived::Scalar;
  return (Scalar(1) + (-z).exp()).inverse();
}

/// silu(z) = z · sigmoid(z), element-wise; returns an Eigen expression.
template <class Derived>
auto silu(const Eigen::ArrayBase<Derived>& z) {
  return z * sigmoid(z);
}

/// softplus(z) = log(1 + e^z), and z itself where z > 20, element-wise; returns an Eigen
/// expression.
template <class Derived>
auto softplus(const Eigen::ArrayBase<Derived>& z) {
  using Scalar = typename Derived::Scalar;
  return (z > Scalar(20)).select(z, z.exp().log1p());
}

}  // namespace seqmem::pieces
