"""A convolution that steps around XLA's slow cases on CPUs and GPUs.

``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated``. On the CPU
backend it reformulates the convolutions XLA:CPU runs badly (``route`` says which, and
why) with the same numbers and gradients; on a GPU it gives convs with a few channels
zero channels up to a multiple of 8; elsewhere it is ``lax.conv_general_dilated`` itself.
The decision is made at trace time from static shapes. docs/cpu_convolutions.md and
docs/gpu.md have the measurements behind it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

FORMULATIONS = ("lax", "canonical", "patches", "phases", "subpixel", "padded")

# On a GPU, convs whose input or output channels are not a multiple of this run as
# 'padded' (in every dtype): zero channels added up to the multiple, which leave the
# result unchanged. cuDNN's tensor-core kernels want multiples of 8 in 16-bit types
# (fp32 convs are padded too, untested for speed); without them it fell back, on an
# H200 in bf16, to kernels that spent 32 ms of CycleGAN's 52 ms iteration on
# the generators' 7x7 convs from and to 3 channels (~0.3 TFLOP/s; docs/gpu.md).
GPU_CHANNEL_MULTIPLE = 8

# A transposed conv with at most this many output channels x phases runs as one conv
# (conv_subpixel) rather than one per phase (conv_phases): measured on XLA:CPU, four
# convs with 1-16 outputs each cost more than one with 4-64.
SUBPIXEL_MAX_OUTPUTS = 64

# Under XLA's defaults (convs in YNNPACK), convs with at most this many output pixels per
# image, and at least this long a contraction (taps x input channels), run as patches:
# there, forward + backward, the convs were 1.3-3x slower (4x4 and 2x2 maps in Darknet's
# last groups, the DCGAN critic's last pyramid layer); 8x8 maps and narrow convs were a
# draw or worse. With `compiler_options` (convs in Eigen) the rule is off: whole steps ran
# faster without it (WGAN iteration 1.15-1.17x, Darknet CIFAR 1.10x).
PATCHES_MAX_OUTPUT_PIXELS = 16
PATCHES_MIN_CONTRACTION = 1024
# ... unless the window is larger than this: the patches would cost more than they save.
PATCHES_MAX_TAPS = 49

# Kernel gradients of 'canonical' convs over inputs of at least this many channels, with
# at most this many output pixels per image, run as `kernel_gradient_taps` when a step is
# compiled with XLA's defaults, which hand convolutions to YNNPACK: there the taps were
# 1.2-1.8x faster than the conv (critic 32x32 64->64, Darknet 16x16 and 8x8); 3-channel
# inputs and 128x128 maps at batch 1 are faster as a conv. With `compiler_options`, XLA
# runs convs with its own Eigen kernels, whose kernel gradient beats the taps in every
# whole training step measured (WGAN iteration 1.23x, CycleGAN 1.13x, Darknet CIFAR
# 1.11x, Fashion-MNIST Darknet 1.06x; docs/cpu_convolutions.md), so the taps are not used.
TAPS_MIN_CHANNELS = 16
TAPS_MAX_OUTPUT_PIXELS = 1024

# None: decide per convolution. 'lax' / 'patches' / 'padded': every routed conv so
# (benchmarks and tests). Read at trace time: a function traced earlier keeps its formulation.
_forced: str | None = None


@contextlib.contextmanager
def force(formulation: str | None) -> Iterator[None]:
  """Within the block, traces every routed conv as ``formulation`` ('lax', 'patches' or
  'padded')."""
  global _forced
  if formulation not in (None, "lax", "patches", "padded"):
    raise ValueError("formulation must be None, 'lax', 'patches' or 'padded', got "
                     f"{formulation!r}")
  previous, _forced = _forced, formulation
  try:
    yield
  finally:
    _forced = previous


def _tuple(v, n: int) -> tuple[int, ...]:
  return (1,) * n if v is None else tuple(int(d) for d in v)


def _channels_last(dn: lax.ConvDimensionNumbers, ndim: int) -> bool:
  # Flax's layout: lhs/out (N, *spatial, C), rhs (*window, I, O).
  nhwc = (0, ndim - 1) + tuple(range(1, ndim - 1))
  hwio = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
  return dn.lhs_spec == nhwc and dn.out_spec == nhwc and dn.rhs_spec == hwio


def _channels_last_spec(nsp: int):
  return {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"),
          3: ("NHWDC", "HWDIO", "NHWDC")}[nsp]


def _explicit_padding(padding, in_spatial, window, strides, rhs_dilation):
  if isinstance(padding, str):
    # lax pads a string relative to the undilated input, as here.
    dilated = [(k - 1) * d + 1 for k, d in zip(window, rhs_dilation)]
    return tuple(tuple(p) for p in lax.padtype_to_pads(in_spatial, dilated, strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _tap_windows(window, rhs_dilation, out, strides):
  """Per kernel tap, row-major: the (start, limit) of the input pixels it meets, strided
  by ``strides``, for an output of spatial size ``out`` (input already padded)."""
  for offsets in itertools.product(*(range(k) for k in window)):
    start = [q * d for q, d in zip(offsets, rhs_dilation)]
    yield start, [b + (m - 1) * st + 1 for b, m, st in zip(start, out, strides)]


def conv_patches(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 precision=None, preferred_element_type=None):
  """Channels-last convolution as patches times one matmul (im2col).

  Same arguments and result as ``lax.conv_general_dilated`` with lhs (N, *spatial, C),
  rhs (*window, C, F) and no feature/batch groups. Built from pad, strided slices,
  concatenate and dot_general, so autodiff gives its gradient with no convolution in it.
  """
  nsp = lhs.ndim - 2
  strides = _tuple(window_strides, nsp)
  ldil, rdil = _tuple(lhs_dilation, nsp), _tuple(rhs_dilation, nsp)
  window = rhs.shape[:nsp]
  pads = _explicit_padding(padding, lhs.shape[1:-1], window, strides, rdil)
  # One pad does both jobs: interior padding dilates the input (transposed convs), edge
  # padding (negative crops) is the conv's own.
  x = lax.pad(lhs, np.zeros((), lhs.dtype),
              [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(pads, ldil)] + [(0, 0, 0)])
  out = [(x.shape[1 + i] - (window[i] - 1) * rdil[i] - 1) // strides[i] + 1
         for i in range(nsp)]
  if min(out) <= 0:
    raise ValueError(f"convolution output would be empty: spatial {tuple(out)}")
  n, c = x.shape[0], x.shape[-1]
  if _covers_input(x.shape[1:-1], window, rdil):
    # One output pixel whose window is the whole (padded) input: the patch is the input
    # itself, already in the taps' row-major order, so a reshape (free both ways) instead
    # of a slice per tap and a concatenate (whose gradient is a pad per tap and a sum).
    patches = x.reshape(n, *(1,) * nsp, -1)
  else:
    cols = [lax.slice(x, (0, *start, 0), (n, *limit, c), (1, *strides, 1))
            for start, limit in _tap_windows(window, rdil, out, strides)]
    # Taps row-major then channels: the order of rhs.reshape(-1, F).
    patches = cols[0] if len(cols) == 1 else lax.concatenate(cols, nsp + 1)
  kernel = rhs.reshape(-1, rhs.shape[-1])
  return lax.dot_general(patches, kernel, (((nsp + 1,), (0,)), ((), ())),
                         precision=precision, preferred_element_type=preferred_element_type)


def _dilated(size: int, dilation: int) -> int:
  return (size - 1) * dilation + 1


def _covers_input(padded_spatial, window, rhs_dilation) -> bool:
  """Whether an undilated window is exactly the padded input: a dense layer, 1 pixel out."""
  return (all(d == 1 for d in rhs_dilation)
          and tuple(padded_spatial) == tuple(window))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_canonical(lhs, rhs, geometry):
  """``lax.conv_general_dilated`` whose gradient convs are in Eigen's layout (channels-last).

  ``geometry`` = (window_strides, explicit padding, lhs_dilation, rhs_dilation, precision).
  JAX's own gradient convs use other dimension orders (kernel I/O swapped; batch and
  feature swapped for the kernel gradient). XLA:CPU transposes such convs into Eigen's
  layout only in the entry computation (its ConvCanonicalization pass walks nothing
  else), so inside a ``lax.scan`` or ``while_loop`` body they ran as naive loops, ~20x
  slower. Here the transposes are explicit, so every conv is NHWC/HWIO wherever it sits.
  The gradient convs are routed again (second derivatives, as WGAN-GP takes, included).
  No forward-mode autodiff (``jax.jvp``), as for any ``custom_vjp``.
  """
  strides, pads, ldil, rdil, precision = geometry
  return lax.conv_general_dilated(lhs, rhs, strides, pads, lhs_dilation=ldil,
                                  rhs_dilation=rdil,
                                  dimension_numbers=_channels_last_spec(lhs.ndim - 2),
                                  precision=precision)


def _conv_canonical_fwd(lhs, rhs, geometry):
  return conv_canonical(lhs, rhs, geometry), (lhs, rhs)


def _conv_canonical_bwd(geometry, residuals, ct):
  lhs, rhs = residuals
  strides, pads, ldil, rdil, precision = geometry
  nsp = lhs.ndim - 2
  route_again = functools.partial(conv_general_dilated,
                                  dimension_numbers=_channels_last_spec(nsp),
                                  precision=precision)
  n = [_dilated(m, d) for m, d in zip(lhs.shape[1:-1], ldil)]
  k = [_dilated(m, d) for m, d in zip(rhs.shape[:nsp], rdil)]
  o = [_dilated(m, d) for m, d in zip(ct.shape[1:-1], strides)]
  # Input gradient: the cotangent, dilated by the strides, convolved with the flipped
  # kernel (in/out channels swapped); its padding makes the output the input's size.
  lo = [kk - p - 1 for kk, (p, _) in zip(k, pads)]
  dx = route_again(ct, jnp.flip(rhs, tuple(range(nsp))).swapaxes(-1, -2), ldil,
                   [(a, nn + kk - 1 - oo - a) for a, nn, kk, oo in zip(lo, n, k, o)],
                   lhs_dilation=strides, rhs_dilation=rdil)
  # Kernel gradient: input channels play the batch, the batch is summed as features,
  # the cotangent is the window (dilated by the strides).
  if (all(d == 1 for d in ldil) and lhs.shape[-1] >= TAPS_MIN_CHANNELS
      and np.prod(ct.shape[1:-1]) <= TAPS_MAX_OUTPUT_PIXELS and not compiler_options()):
    return dx, kernel_gradient_taps(lhs, ct, rhs.shape[:nsp], strides, pads, rdil,
                                    precision=precision)
  dw = route_again(jnp.swapaxes(lhs, 0, -1), jnp.moveaxis(ct, 0, -2), rdil,
                   [(p, oo - nn + kk - p - 1) for (p, _), nn, kk, oo in zip(pads, n, k, o)],
                   lhs_dilation=ldil, rhs_dilation=strides)
  return dx, jnp.moveaxis(dw, 0, -2)


def kernel_gradient_taps(lhs, ct, window, window_strides, padding, rhs_dilation=None,
                         precision=None):
  """The kernel gradient of a channels-last convolution, one matmul per kernel tap.

  ``lhs`` (N, *spatial, C) is the conv's input, ``ct`` (N, *out, F) the cotangent of its
  output, ``padding`` explicit (lo, hi) pairs; returns (*window, C, F), what
  ``jax.vjp`` of ``lax.conv_general_dilated`` gives for the kernel (no input dilation).
  Both are transposed once to (*spatial, N, C), where a tap's window is runs of contiguous
  N*C blocks: XLA:CPU copies each tap's slice fast and contracts it with the cotangent
  over (*out, N) in one dot_general. Built from lax ops, so it has gradients too.
  """
  nsp = lhs.ndim - 2
  strides, rdil = _tuple(window_strides, nsp), _tuple(rhs_dilation, nsp)
  x = lax.pad(lhs, np.zeros((), lhs.dtype),
              [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)])
  to_spatial_first = (*range(1, nsp + 1), 0, nsp + 1)
  x, g = jnp.transpose(x, to_spatial_first), jnp.transpose(ct, to_spatial_first)
  out, (n, c), f = g.shape[:nsp], x.shape[nsp:], g.shape[-1]
  g = g.reshape(-1, f)
  taps = []
  for start, limit in _tap_windows(window, rdil, out, strides):
    tap = lax.slice(x, (*start, 0, 0), (*limit, n, c), (*strides, 1, 1)).reshape(-1, c)
    taps.append(lax.dot_general(tap, g, (((0,), (0,)), ((), ())), precision=precision))
  return jnp.stack(taps).reshape(*window, c, f).astype(lhs.dtype)


conv_canonical.defvjp(_conv_canonical_fwd, _conv_canonical_bwd)


def _phase_geometry(n: int, k: int, s: int, lo: int, hi: int):
  """One spatial dim of a stride-1 conv over an input dilated by s, split by output phase.

  Output pixel o = m*s + p (phase p, row m) sees taps first_p, first_p + s, ... (``taps``
  of them), which land on undilated input pixels m + shift_p, m + shift_p + 1, ...

  Returns:
    (output size, rows per phase, [(first, taps, shift) for each phase p]).
  """
  out = (n - 1) * s + 1 + lo + hi - k + 1
  phases = []
  for p in range(s):
    first = (lo - p) % s
    phases.append((first, max(0, -(-(k - first) // s)), (p + first - lo) // s))
  return out, -(-out // s), phases


def _interleave(y, rows, strides, out):
  """(N, *rows, *strides, F) phase blocks -> (N, *out, F): row m of phase p is pixel m*s+p."""
  nsp = len(rows)
  order = [0] + [a for i in range(nsp) for a in (1 + i, 1 + nsp + i)] + [2 * nsp + 1]
  y = y.transpose(order).reshape(
      (y.shape[0],) + tuple(m * s for m, s in zip(rows, strides)) + (y.shape[-1],))
  return lax.slice(y, (0,) * y.ndim, (y.shape[0], *out, y.shape[-1]))


def conv_phases(lhs, rhs, padding, lhs_dilation, precision=None,
                preferred_element_type=None):
  """Stride-1 convolution of an lhs-dilated input (a transposed conv), without the holes.

  Output pixels at the same position modulo the dilation s (a phase) all see every s-th
  kernel tap, over the undilated input. So each of the s^d phases is an ordinary conv of
  ``lhs`` with a sub-kernel (routed again by ``conv_general_dilated``), and the phases
  interleave into the result: no multiplications by the dilation's zeros, and gradients
  are those of ordinary convs. Channels-last, rhs_dilation 1, no groups.
  """
  nsp = lhs.ndim - 2
  ldil = _tuple(lhs_dilation, nsp)
  pads = _explicit_padding(padding, lhs.shape[1:-1], rhs.shape[:nsp], (1,) * nsp,
                           (1,) * nsp)
  geo = [_phase_geometry(n, k, s, lo, hi)
         for n, k, s, (lo, hi) in zip(lhs.shape[1:-1], rhs.shape[:nsp], ldil, pads)]
  rows = tuple(g[1] for g in geo)
  n_batch, features = lhs.shape[0], rhs.shape[-1]
  blocks = []
  for combo in itertools.product(*(g[2] for g in geo)):
    if min(taps for _, taps, _ in combo) == 0:
      blocks.append(jnp.zeros((n_batch, *rows, features),
                                    preferred_element_type or lhs.dtype))
      continue
    sub = lax.slice(rhs, [first for first, _, _ in combo] + [0, 0], rhs.shape,
                    list(ldil) + [1, 1])
    # Pad (or crop) so that every phase yields `rows` rows; surplus rows are cut below.
    conv_pads = [(-shift, m + taps - 1 + shift - n)
                 for (_, taps, shift), m, n in zip(combo, rows, lhs.shape[1:-1])]
    blocks.append(conv_general_dilated(
        lhs, sub, (1,) * nsp, conv_pads, dimension_numbers=_channels_last_spec(nsp),
        precision=precision, preferred_element_type=preferred_element_type))
  y = jnp.stack(blocks, axis=-2)  # (N, *rows, phases, F), phases row-major
  y = y.reshape((n_batch,) + rows + ldil + (features,))
  return _interleave(y, rows, ldil, [g[0] for g in geo])


def conv_subpixel(lhs, rhs, padding, lhs_dilation, precision=None,
                  preferred_element_type=None):
  """As ``conv_phases``, with all phases in one convolution (sub-pixel convolution).

  The phases' sub-kernels sit side by side on the output-channel axis, each placed in a
  window wide enough for all of them (zero taps elsewhere): one conv with s^d * F outputs
  and some multiplications by zero, which pays when F is small (XLA:CPU's conv costs
  nearly as much for 3 output channels as for 48).
  """
  nsp = lhs.ndim - 2
  ldil = _tuple(lhs_dilation, nsp)
  pads = _explicit_padding(padding, lhs.shape[1:-1], rhs.shape[:nsp], (1,) * nsp,
                           (1,) * nsp)
  index, conv_pads, geo = [], [], []
  for n, k, s, (lo, hi) in zip(lhs.shape[1:-1], rhs.shape[:nsp], ldil, pads):
    out, rows, phases = _phase_geometry(n, k, s, lo, hi)
    used = [(shift, taps) for _, taps, shift in phases if taps]
    start = min(shift for shift, _ in used)
    width = max(shift + taps for shift, taps in used) - start
    idx = np.full((s, width), k)  # idx[p, a]: phase p's tap at window position a; k: zero
    for p, (first, taps, shift) in enumerate(phases):
      idx[p, shift - start:shift - start + taps] = first + s * np.arange(taps)
    index.append(idx)
    conv_pads.append((-start, rows + width - 1 + start - n))
    geo.append((out, rows))
  w = jnp.pad(rhs, [(0, 1)] * nsp + [(0, 0), (0, 0)])  # tap k: zeros
  w = w[tuple(idx.reshape((1, 1) * i + idx.shape + (1, 1) * (nsp - 1 - i))
              for i, idx in enumerate(index))]  # (p1, a1, p2, a2, .., C, F)
  order = ([2 * i + 1 for i in range(nsp)] + [2 * nsp] + [2 * i for i in range(nsp)]
           + [2 * nsp + 1])
  c, f = rhs.shape[-2:]
  w = w.transpose(order).reshape(tuple(len(i[0]) for i in index) + (c, -1))
  y = conv_general_dilated(lhs, w, (1,) * nsp, conv_pads,
                           dimension_numbers=_channels_last_spec(nsp), precision=precision,
                           preferred_element_type=preferred_element_type)
  rows = tuple(g[1] for g in geo)
  y = y.reshape((lhs.shape[0],) + rows + ldil + (f,))
  return _interleave(y, rows, ldil, [g[0] for g in geo])


def _swapped_by_xla(lhs_spatial, window, strides, padding, lhs_dilation, rhs_dilation):
  """Whether XLA's operand-swap rewrite turns this conv around (input <-> kernel).

  XLA swaps when the window holds more taps than the input has pixels (a 3x3 window on a
  2x2 map); the swapped conv has a layout XLA:CPU has no Eigen kernel for, and its naive
  loop runs at 0.1-3 GFLOP/s. Dims where the window exactly covers the unpadded input (a
  dense contraction) do not count; a 1-pixel input padded to one full window counts as
  the window (this mirrors XLA's conv_operand_swapper).
  """
  taps = pixels = 1
  for n, k, s, (lo, hi), ld, rd in zip(lhs_spatial, window, strides, padding, lhs_dilation,
                                       rhs_dilation):
    if k == n and lo == hi == 0 and s == ld == rd == 1:
      continue
    taps *= k
    pixels *= k if (n == 1 and s == 1 and rd == 1 and lo == hi == k - 1) else n
  return taps > pixels


def route(lhs_shape, rhs_shape, window_strides, padding, lhs_dilation=None,
          rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
          batch_group_count=1, backend=None) -> str:
  """The formulation ``conv_general_dilated`` picks: one of ``FORMULATIONS``.

  On CPU, for channels-last convs without groups, in this order:
  * a dilated input (a transposed conv, or a strided conv's input gradient) at stride 1:
    'phases' ('subpixel' if the output is narrow), as lax would multiply zeros;
  * XLA would swap the operands (``_swapped_by_xla``), or, under XLA's defaults only, a
    wide conv has a tiny output map (see ``PATCHES_MAX_OUTPUT_PIXELS``): 'patches';
  * a 1x1 window, or one that is the whole padded input: 'patches', i.e. one matmul
    (after a free reshape), which XLA:CPU runs ~2x faster;
  * otherwise 'canonical': lax's conv, its gradient convs channels-last (so XLA:CPU
    runs them with Eigen inside loops too) and each routed by these same rules; its
    kernel gradient is `kernel_gradient_taps` where that is faster (TAPS_*: only when
    compiled without `compiler_options`).
  On a GPU, channels-last convs without groups whose input or output channels are not a
  multiple of ``GPU_CHANNEL_MULTIPLE``: 'padded'.
  On every other backend, and for other layouts or grouped convs: 'lax'.
  """
  if _forced is not None:
    return _forced
  backend = backend or jax.default_backend()
  nsp = len(lhs_shape) - 2
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  if (feature_group_count != 1 or batch_group_count != 1
      or not _channels_last(dn, len(lhs_shape))):
    return "lax"
  if backend in ("gpu", "cuda", "rocm"):
    odd = any(c % GPU_CHANNEL_MULTIPLE for c in rhs_shape[-2:])
    return "padded" if odd else "lax"
  if backend != "cpu":
    return "lax"
  strides = _tuple(window_strides, nsp)
  ldil, rdil = _tuple(lhs_dilation, nsp), _tuple(rhs_dilation, nsp)
  if isinstance(padding, str) and any(d != 1 for d in ldil):
    return "lax"  # lax rejects this combination; let it say so
  window = tuple(rhs_shape[:nsp])
  if any(d != 1 for d in ldil) and strides == rdil == (1,) * nsp:
    narrow = rhs_shape[-1] * int(np.prod(ldil)) <= SUBPIXEL_MAX_OUTPUTS
    return "subpixel" if narrow else "phases"
  pads = _explicit_padding(padding, lhs_shape[1:-1], window, strides, rdil)
  padded = [_dilated(n, ld) + lo + hi for n, ld, (lo, hi) in zip(lhs_shape[1:-1], ldil, pads)]
  pixels = np.prod([(p - _dilated(k, rd)) // s + 1
                    for p, k, s, rd in zip(padded, window, strides, rdil)])
  # A tiny map from a no smaller input (not mostly padding) with a contraction large
  # enough to amortise building the patches; only where XLA hands convs to YNNPACK
  # (its defaults): with `compiler_options` Eigen's convs won these whole steps back.
  small = (pixels <= PATCHES_MAX_OUTPUT_PIXELS and np.prod(lhs_shape[1:-1]) >= pixels
           and np.prod(window) * lhs_shape[-1] >= PATCHES_MIN_CONTRACTION
           and not compiler_options())
  swapped = _swapped_by_xla(lhs_shape[1:-1], window, strides, pads, ldil, rdil)
  # Patches grow with the window: past a few dozen taps, compile time and memory would
  # cost more than they save.
  if (small or swapped) and np.prod(window) <= PATCHES_MAX_TAPS:
    return "patches"
  if window == (1,) * nsp or _covers_input(padded, window, rdil):
    return "patches"  # one matmul (after a free reshape when the window is the input)
  return "canonical"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """``lax.conv_general_dilated``, reformulated where XLA:CPU would be slow (``route``)."""
  how = route(lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation,
              dimension_numbers, feature_group_count, batch_group_count)
  if how == "canonical" and preferred_element_type is None:
    nsp = lhs.ndim - 2
    strides, rdil = _tuple(window_strides, nsp), _tuple(rhs_dilation, nsp)
    pads = _explicit_padding(padding, lhs.shape[1:-1], rhs.shape[:nsp], strides, rdil)
    return conv_canonical(lhs, rhs, (strides, pads, _tuple(lhs_dilation, nsp), rdil,
                                     precision))
  if how in ("lax", "canonical"):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  if how == "padded":
    return conv_padded_channels(lhs, rhs, window_strides, padding, lhs_dilation,
                                rhs_dilation, precision, preferred_element_type)
  if how == "patches":
    return conv_patches(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                        precision, preferred_element_type)
  split = conv_phases if how == "phases" else conv_subpixel
  return split(lhs, rhs, padding, lhs_dilation, precision, preferred_element_type)


def conv_padded_channels(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, precision=None, preferred_element_type=None,
                         multiple: int = GPU_CHANNEL_MULTIPLE):
  """A channels-last conv with input and output channels zero-padded to ``multiple``.

  The added input channels meet zero weights and the added outputs are cut off, so the
  result, and through pad and slice the gradients, are lax's.
  """
  pad_in, pad_out = (-c % multiple for c in rhs.shape[-2:])
  nsp = lhs.ndim - 2
  lhs = jnp.pad(lhs, [(0, 0)] * (nsp + 1) + [(0, pad_in)])
  rhs = jnp.pad(rhs, [(0, 0)] * nsp + [(0, pad_in), (0, pad_out)])
  out = lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=_channels_last_spec(nsp),
      precision=precision, preferred_element_type=preferred_element_type)
  return out[..., :out.shape[-1] - pad_out]


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  # lax.conv_transpose's reading of 'SAME' / 'VALID' (the forward conv's padding).
  if padding == "SAME":
    total = k + s - 2
    lo = k - 1 if s > k - 1 else -(-total // 2)
  else:
    total = k + s - 2 + max(k - s, 0)
    lo = k - 1
  return lo, total - lo


def conv_transpose(lhs, rhs, strides, padding, rhs_dilation=None, transpose_kernel=False,
                   precision=None, preferred_element_type=None):
  """``lax.conv_transpose`` for channels-last arrays, through ``conv_general_dilated``.

  The same lhs-dilated convolution lax builds (explicit pairs are the transposed conv's
  own padding, 'SAME'/'VALID' the forward conv's), routed like any other.
  """
  nsp = lhs.ndim - 2
  rdil = _tuple(rhs_dilation, nsp)
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
    pads = [_transpose_padding((k - 1) * d + 1, s, padding)
            for k, s, d in zip(rhs.shape[:nsp], strides, rdil)]
  else:
    pads = [tuple(p) for p in padding]
  if transpose_kernel:
    # Flip the window and swap the in/out channel axes: the forward conv's kernel.
    rhs = jnp.flip(rhs, tuple(range(nsp))).swapaxes(-1, -2)
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _channels_last_spec(nsp))
  return conv_general_dilated(lhs, rhs, (1,) * nsp, pads, lhs_dilation=tuple(strides),
                              rhs_dilation=rdil, dimension_numbers=dn, precision=precision,
                              preferred_element_type=preferred_element_type)


# --------------------------------------------------------------------- inspecting programs

def jaxpr_equations(jaxpr, primitive: str | None = None) -> Iterator:
  """The equations of a jaxpr and of every jaxpr inside it (scan and while bodies,
  custom_vjp, pjit), or only those of one ``primitive``: what a function traced to."""
  for eqn in jaxpr.eqns:
    if primitive is None or eqn.primitive.name == primitive:
      yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from jaxpr_equations(inner, primitive)


_EIGEN_LAYOUT = re.compile(r"dim_labels=b0?1?2?f_0?1?2?io->b0?1?2?f")


def conv_census(hlo: str) -> dict[str, list[int]]:
  """Convolutions of an optimised HLO module, in while-loop bodies and elsewhere.

  Returns ``{"loop": [all, non_eigen], "outside": [all, non_eigen]}``: non_eigen counts
  those in a layout other than NHWC/HWIO, which XLA:CPU runs as a naive loop (cause 2 in
  docs/cpu_convolutions.md). Read ``jax.jit(f).lower(...).compile().as_text()``.
  """
  census = {"loop": [0, 0], "outside": [0, 0]}
  bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
  # Computations a loop body calls (fusions, nested calls) count as in the loop too.
  computation, calls = None, {}
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head:
      computation = head.group(1)
      calls[computation] = set()
    elif computation:
      calls[computation].update(re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)",
                                           line))
  in_loop, frontier = set(), list(bodies)
  while frontier:
    c = frontier.pop()
    if c not in in_loop:
      in_loop.add(c)
      frontier.extend(calls.get(c, ()))
  computation = None
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head:
      computation = head.group(1)
    elif " convolution(" in line:
      where = census["loop" if computation in in_loop else "outside"]
      where[0] += 1
      where[1] += not _EIGEN_LAYOUT.search(line)
  return census


# ----------------------------------------------------------------------------- compiling

# XLA:CPU (jax 0.10) hands some fusions to YNNPACK by default. Offloading only the
# reductions (BatchNorm/InstanceNorm statistics, losses) and leaving elementwise fusions
# and dots to XLA's own code made whole training steps faster on this project's 2-core
# Xeon, measured in turns in one process: Fashion-MNIST Darknet 808 -> 1,043 images/s,
# CycleGAN iteration (128x128) 5.24 -> 4.06 s, WGAN generator iteration (64x64) 16.96 ->
# 14.69 s (docs/cpu_convolutions.md). The option is experimental in XLA: a jaxlib that
# does not know it gets no options, never an error.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}

# True inside `xla_defaults` (benchmarks and tests compare the two). Read when a step is
# jitted.
_xla_defaults = False


@contextlib.contextmanager
def xla_defaults() -> Iterator[None]:
  """Within the block, `jit` passes no compiler options: XLA's own defaults."""
  global _xla_defaults
  previous, _xla_defaults = _xla_defaults, True
  try:
    yield
  finally:
    _xla_defaults = previous


@functools.cache
def _cpu_options_accepted() -> bool:
  try:
    jax.jit(lambda x: x * 2, compiler_options=CPU_COMPILER_OPTIONS).lower(1.0).compile()
  except Exception:  # pylint: disable=broad-except  # an XLA without the option
    return False
  return True


def compiler_options() -> dict:
  """The XLA options jaxgan compiles its steps with on this backend ({} off the CPU)."""
  if _xla_defaults or jax.default_backend() != "cpu" or not _cpu_options_accepted():
    return {}
  return dict(CPU_COMPILER_OPTIONS)


def jit(fun, **kwargs):
  """``jax.jit`` with `compiler_options`: how jaxgan compiles its training steps."""
  return jax.jit(fun, compiler_options=compiler_options() or None, **kwargs)
