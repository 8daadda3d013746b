r"""Which convolutions of jaxgan's networks XLA:CPU runs slowly, and what helps.

  python -m benchmarks.conv_survey [--cases darknet,gen64] [--formulations lax,routed]
      [--budget_s 1.5] [--out rows.json]

Traces each network's training forward pass, collects its distinct convolutions exactly as
Flax emits them (transposed convs included: lhs dilation, flipped kernel), and times each
jitted on its own, forward and forward+backward (gradients wrt input and kernel), as

  lax       ``lax.conv_general_dilated``: what Flax calls, the code before routing;
  patches   ``jaxgan.ops.conv_patches``: strided slices + concatenate + one matmul (a 1x1
            conv is then a plain matmul);
  xlapat    ``lax.conv_general_dilated_patches`` + one matmul;
  hybrid    lax forward, the backward of ``patches``;
  phases    ``jaxgan.ops.conv_phases`` for a dilated input (else lax);
  subpixel  ``jaxgan.ops.conv_subpixel`` for a dilated input (else lax);
  routed    ``jaxgan.ops.conv_general_dilated``: the rule the models use (column "route").

Every program is compiled as jaxgan compiles its training steps (``ops.jit``: with
``ops.compiler_options``); ``--xla_defaults`` compiles with XLA's own defaults instead.
GFLOP/s count useful multiply-adds only (taps that land on padding or on the holes of a
dilated input are excluded) x2; forward+backward counts three times the forward's. The
``slow`` column counts convolutions that XLA leaves in a layout its Eigen kernels cannot
run (dim_labels other than b01f_01io->b01f after optimisation) in the compiled forward /
forward+backward programs of ``lax``. Timings: each variant is compiled ahead of time,
then the variants take turns, and each keeps its fastest run (the machine is shared).
The last line per network sums the convs' times, each times its count.
"""

import collections
import contextlib
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from benchmarks import common
from jaxgan import models, ops

FLAGS = flags.FLAGS
# --formulations and --budget_s (seconds of timed runs per convolution: at least 3 rounds
# unless one round takes more than 4 budgets) when not given.
FORMULATIONS, BUDGET_S = ("lax", "patches", "routed"), 1.5


def _darknet(num_blocks, nf, batch, size, channels):
  net = models.Darknet(num_blocks=num_blocks, nf=nf)
  x = jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)
  return net, x, dict(train=True)


def _critic(isize, nc, ndf, n_extra, batch):
  net = models.DCGANCritic(isize=isize, nc=nc, ndf=ndf, n_extra_layers=n_extra)
  return net, jax.ShapeDtypeStruct((batch, isize, isize, nc), jnp.float32), dict(train=True)


def _generator(isize, nz, nc, ngf, n_extra, batch):
  net = models.DCGANGenerator(isize=isize, nz=nz, nc=nc, ngf=ngf, n_extra_layers=n_extra)
  return net, jax.ShapeDtypeStruct((batch, nz), jnp.float32), dict(train=True)


def _cyclegan(gen, size, nc, width, depth):
  if gen:
    net = models.ResnetGenerator(ngf=width, n_blocks=depth, nc=nc)
  else:
    net = models.PatchDiscriminator(ndf=width, n_layers=depth)
  return net, jax.ShapeDtypeStruct((1, size, size, nc), jnp.float32), dict(train=True)


# name: (what it is, builder). Batch sizes are the configs' (Darknet CIFAR at the brief's 64).
SYSTEMS = {
    "darknet": ("Darknet (1,2,4,6,3) nf 32, CIFAR 32x32, batch 64",
                functools.partial(_darknet, (1, 2, 4, 6, 3), 32, 64, 32, 3)),
    "darknet_fmnist": ("Darknet (1,1,1) nf 8, Fashion-MNIST 28x28, batch 128",
                       functools.partial(_darknet, (1, 1, 1), 8, 128, 28, 1)),
    "critic64": ("DCGAN critic 64x64 nc 3 ndf 64 +1 extra, batch 64",
                 functools.partial(_critic, 64, 3, 64, 1, 64)),
    "gen64": ("DCGAN generator 64x64 nz 100 ngf 64 +1 extra, batch 64",
              functools.partial(_generator, 64, 100, 3, 64, 1, 64)),
    "critic32": ("DCGAN critic 32x32 nc 1 ndf 24 (wgan.py:fashion_mnist), batch 64",
                 functools.partial(_critic, 32, 1, 24, 0, 64)),
    "gen32": ("DCGAN generator 32x32 nc 1 ngf 24 (wgan.py:fashion_mnist), batch 64",
              functools.partial(_generator, 32, 100, 1, 24, 0, 64)),
    "critic32_ndf64": ("DCGAN critic 32x32 nc 1 ndf 64 (the critic scan's case), batch 64",
                       functools.partial(_critic, 32, 1, 64, 0, 64)),
    "cyc_gen128": ("CycleGAN ResNet generator ngf 64, 6 blocks, 128x128, batch 1",
                   functools.partial(_cyclegan, True, 128, 3, 64, 6)),
    "cyc_disc128": ("CycleGAN PatchGAN ndf 64, 3 layers, 128x128, batch 1",
                    functools.partial(_cyclegan, False, 128, 3, 64, 3)),
    "cyc_gen32": ("CycleGAN generator ngf 16, 3 blocks, 32x32 nc 1 (cyclegan.py:fashion_mnist)",
                  functools.partial(_cyclegan, True, 32, 1, 16, 3)),
    "cyc_disc32": ("CycleGAN PatchGAN ndf 16, 2 layers, 32x32 nc 1 (cyclegan.py:fashion_mnist)",
                   functools.partial(_cyclegan, False, 32, 1, 16, 2)),
}

Conv = collections.namedtuple("Conv", "lhs rhs params")


def collect_convs(net, x, kwargs):
  """Distinct convolutions of one training forward pass, with how often each occurs."""
  variables = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, **kwargs), x)
  apply = functools.partial(net.apply, **kwargs, mutable=["batch_stats"],
                            rngs={"dropout": jax.random.key(0)})
  with ops.force("lax"):  # the convolutions as Flax asks for them, none rerouted
    jaxpr = jax.make_jaxpr(apply)(variables, x)
  counts = collections.Counter()
  for eqn in ops.jaxpr_equations(jaxpr.jaxpr, "conv_general_dilated"):
    params = {k: eqn.params[k] for k in (
        "window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers",
        "feature_group_count", "batch_group_count")}
    counts[Conv(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape,
                tuple(sorted(params.items())))] += 1
  return counts


def useful_flops(conv: Conv) -> int:
  """2 x multiply-adds whose input tap is a real pixel (not padding, not a dilation hole)."""
  p = dict(conv.params)
  nsp = len(conv.lhs) - 2
  taps = 1
  for i in range(nsp):
    n, k = conv.lhs[1 + i], conv.rhs[i]
    s, (lo, hi) = p["window_strides"][i], p["padding"][i]
    ld, rd = p["lhs_dilation"][i], p["rhs_dilation"][i]
    size = (n - 1) * ld + 1 + lo + hi
    out = (size - (k - 1) * rd - 1) // s + 1
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * rd - lo
    taps *= int(((pos >= 0) & (pos <= (n - 1) * ld) & (pos % ld == 0)).sum())
  return 2 * conv.lhs[0] * taps * conv.rhs[-2] * conv.rhs[-1]


def describe(conv: Conv) -> str:
  p = dict(conv.params)
  n, *sp, c = conv.lhs
  *win, _, f = conv.rhs
  text = f"{'x'.join(map(str, sp))} {c}->{f} k{'x'.join(map(str, win))}"
  if any(s != 1 for s in p["window_strides"]):
    text += f" s{p['window_strides'][0]}"
  if any(d != 1 for d in p["lhs_dilation"]):
    text += f" T{p['lhs_dilation'][0]}"  # transposed: input dilated by the stride
  pads = p["padding"]
  text += " p" + ("".join(map(str, pads[0])) if len(set(pads)) == 1 else str(pads))
  return f"{text} N{n}"


def _lax(x, w, params):
  return lax.conv_general_dilated(x, w, **params)


def _patches(x, w, params):
  return ops.conv_patches(x, w, params["window_strides"], params["padding"],
                          params["lhs_dilation"], params["rhs_dilation"])


def _xla_patches(x, w, params):
  nsp = x.ndim - 2
  p = lax.conv_general_dilated_patches(
      x, w.shape[:nsp], params["window_strides"], params["padding"],
      params["lhs_dilation"], params["rhs_dilation"],
      dimension_numbers=params["dimension_numbers"])
  # Its patch axis is channel-major: (C, *window).
  k = jnp.moveaxis(w, -2, 0).reshape(-1, w.shape[-1])
  return p @ k


def _hybrid(x, w, params):
  @jax.custom_vjp
  def f(x, w):
    return _lax(x, w, params)

  def fwd(x, w):
    return f(x, w), (x, w)

  def bwd(res, ct):
    return jax.vjp(lambda a, b: _patches(a, b, params), *res)[1](ct)

  f.defvjp(fwd, bwd)
  return f(x, w)


def _phases(x, w, params):
  if all(d == 1 for d in params["lhs_dilation"]):
    return _lax(x, w, params)
  return ops.conv_phases(x, w, params["padding"], params["lhs_dilation"])


def _subpixel(x, w, params):
  if all(d == 1 for d in params["lhs_dilation"]):
    return _lax(x, w, params)
  return ops.conv_subpixel(x, w, params["padding"], params["lhs_dilation"])


def _routed(x, w, params):
  return ops.conv_general_dilated(x, w, **params)


VARIANTS = {"lax": _lax, "patches": _patches, "xlapat": _xla_patches, "hybrid": _hybrid,
            "phases": _phases, "subpixel": _subpixel, "routed": _routed}

def slow_convs(compiled_text: str) -> tuple[int, int]:
  """(non-canonical, all) convolution instructions in an optimised HLO module."""
  census = ops.conv_census(compiled_text)
  return (census["loop"][1] + census["outside"][1], census["loop"][0] + census["outside"][0])


def _programs(fn, conv: Conv):
  params = dict(conv.params)
  x = jax.ShapeDtypeStruct(conv.lhs, jnp.float32)
  w = jax.ShapeDtypeStruct(conv.rhs, jnp.float32)
  f = functools.partial(fn, params=params)
  y = jax.eval_shape(f, x, w)

  def fwd_bwd(x, w, ct):
    out, vjp = jax.vjp(f, x, w)
    return out, vjp(ct)

  # Compiled as the models' steps are: with jaxgan's XLA options (ops.jit).
  return (ops.jit(f).lower(x, w).compile(),
          ops.jit(fwd_bwd).lower(x, w, jax.ShapeDtypeStruct(y.shape, y.dtype)).compile(),
          y.shape)


def time_conv(conv: Conv, variants, budget: float):
  """{variant: (fwd s, fwd+bwd s)} and the slow-conv counts of lax's programs."""
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], conv.lhs)
  w = jax.random.normal(keys[1], conv.rhs) * 0.05
  progs, slow = {}, None
  route = ops.route(conv.lhs, conv.rhs, **dict(conv.params), backend="cpu")
  for name in variants:
    if name == "routed" and route in variants:
      continue  # the same program as that variant's: copied below
    fwd, both, yshape = _programs(VARIANTS[name], conv)
    progs[name] = (fwd, both)
    if name == "lax":
      slow = (slow_convs(fwd.as_text()), slow_convs(both.as_text()))
  ct = jax.random.normal(keys[2], yshape)
  best = {name: [np.inf, np.inf] for name in variants}
  spent, rounds = 0.0, 0
  # At least 3 rounds, fewer only where one round alone takes several budgets.
  while (rounds < 3 or spent < budget) and not (rounds and spent > 4 * budget):
    for name, (fwd, both) in progs.items():
      for j, (prog, args) in enumerate(((fwd, (x, w)), (both, (x, w, ct)))):
        t = time.perf_counter()
        jax.block_until_ready(prog(*args))
        dt = time.perf_counter() - t
        best[name][j] = min(best[name][j], dt)
        spent += dt
    rounds += 1
  if "routed" in variants and route in variants:
    best["routed"] = best[route]
  return best, slow


def main(argv):
  del argv
  with ops.xla_defaults() if FLAGS.xla_defaults else contextlib.nullcontext():
    survey(FLAGS.cases or list(SYSTEMS), common.value("formulations", FORMULATIONS),
           common.value("budget_s", BUDGET_S))


def survey(systems, formulations, budget_s):
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()}, "
        f"XLA options {ops.compiler_options() or 'defaults'}", flush=True)
  rows = []
  for system in systems:
    title, build = SYSTEMS[system]
    counts = collect_convs(*build())
    print(f"\n## {system}: {title} ({sum(counts.values())} convs, {len(counts)} distinct)")
    head = " | ".join(f"{v} fwd / f+b" for v in formulations)
    print(f"| conv | n | slow fwd, f+b | route | GFLOP | {head} |  (GFLOP/s; f+b counts 3x fwd)")
    for conv, n in counts.items():
      best, slow = time_conv(conv, formulations, budget_s)
      flops = useful_flops(conv)
      rates = {v: (flops / t[0] / 1e9, 3 * flops / t[1] / 1e9) for v, t in best.items()}
      cells = " | ".join(f"{rates[v][0]:.1f} / {rates[v][1]:.1f}" for v in formulations)
      slow_txt = f"{slow[0][0]}/{slow[0][1]}, {slow[1][0]}/{slow[1][1]}" if slow else "-"
      route = ops.route(conv.lhs, conv.rhs, **dict(conv.params), backend="cpu")
      print(f"| {describe(conv)} | {n} | {slow_txt} | {route} | {flops / 1e9:.3f} | {cells} |",
            flush=True)
      rows.append(dict(system=system, conv=describe(conv), count=n, flops=flops, slow=slow,
                       seconds=best, route=route, load=os.getloadavg()[0]))
    totals = {v: (sum(r["count"] * r["seconds"][v][0] for r in rows if r["system"] == system),
                  sum(r["count"] * r["seconds"][v][1] for r in rows if r["system"] == system))
              for v in formulations}
    print("sum over the network's convs, ms fwd / f+b: " + ", ".join(
        f"{v} {t[0] * 1e3:.0f} / {t[1] * 1e3:.0f}" for v, t in totals.items()),
          f"(load {os.getloadavg()[0]:.2f})", flush=True)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
  app.run(main)
