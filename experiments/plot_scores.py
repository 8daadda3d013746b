r"""Draws the built-in evaluation's scores of GAN runs against training iterations.

  python -m experiments.plot_scores --out docs/wgan_scores.png \
      runs/wgan_clip runs/wgan_gp runs/wgan_upsample [--labels clip,gp,upsample] \
      [--metrics fd,precision,recall,classes_covered] [--logy fd]
  python -m experiments.plot_scores --out docs/cyclegan_scores.png runs/cyclegan_fmnist

Reads each run's metrics.jsonl (the records with ``eval_seconds``, written by the
evaluation hook every ``eval.every`` steps and at the end; a resumed run's repeated steps
count once, the newest) and draws one panel per metric: the score with its spread as
error bars and a band, the floor (held-out real images) as a dashed line and, for scores
on a bounded scale, the ceiling (noise; for CycleGAN the untranslated sources) as a
dotted one; FD's and KID's ceilings are far
off any useful scale, so their panels name them in the title instead. A CycleGAN run
draws one line per direction (AtoB, BtoA), each against its own floor.

Needs matplotlib, which jaxgan itself does not: ``pip install matplotlib``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import common
from jaxgan import config as config_lib, metrics

flags.DEFINE_list("labels", None, "One legend label per run (default: the folder names).")
flags.DEFINE_list("metrics", None, "Panels, in order (default: WGAN fd,precision,recall,"
                  "classes_covered; CycleGAN fd,translation_rate).")
flags.DEFINE_list("logy", [], "Metrics whose panel has a logarithmic y axis, e.g. fd.")
flags.DEFINE_string("title", None, "Figure title (default: the runs' judge).")
FLAGS = flags.FLAGS

DIRECTIONS = ("AtoB", "BtoA")
DEFAULT_METRICS = {"wgan": ("fd", "precision", "recall", "classes_covered"),
                   "cyclegan": ("fd", "translation_rate")}
# Ceilings far outside the plotted range (noise): named in the title, not drawn.
UNBOUNDED = ("fd", "kid")
NAMES = {"fd": "Fréchet distance", "kid": "KID", "precision": "precision",
         "recall": "recall", "classes_covered": "classes covered",
         "class_entropy": "class entropy (nats)", "memorisation": "memorisation (features)",
         "memorisation_pixels": "memorisation (pixels)", "translation_rate":
         "translation rate", "cycle_error": "cycle error", "mean_confidence":
         "mean confidence", "class_entropy_normalised": "class entropy / log K"}
X_LABELS = {"wgan": "generator iterations", "cyclegan": "iterations (batch 1)"}
# What the reference points are: a WGAN's samples sit between held-out real images and
# noise; a CycleGAN direction's translations between the real target images and the
# untranslated sources.
REFERENCES = {"wgan": ("held-out real", "noise"),
              "cyclegan": ("real target", "untranslated source")}


def eval_records(workdir: str) -> list[dict]:
  """The evaluation records of a run's metrics.jsonl, one per step (the newest), in order.

  Args:
    workdir: a WGAN or CycleGAN run's folder.

  Returns:
    The records that hold ``eval_seconds``, sorted by step.

  Raises:
    FileNotFoundError: no metrics.jsonl in ``workdir``.
    ValueError: the run recorded no evaluation (``eval.judge`` was off).
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a training run's folder?")
  by_step = {}
  for record in metrics.read_metrics(workdir):
    if "eval_seconds" in record:
      by_step[record["step"]] = record  # a resumed run may repeat a step: keep the newest
  if not by_step:
    raise ValueError(f"{path} holds no evaluation records: train with --config.eval.judge="
                     "classifier:WORKDIR (or inception:WEIGHTS.npz) to record scores.")
  return [by_step[s] for s in sorted(by_step)]


def run_kind(records: list[dict]) -> str:
  """"cyclegan" when the records are per direction, else "wgan"."""
  return "cyclegan" if any(f"{DIRECTIONS[0]}_fd" in r for r in records) else "wgan"


def series(records: list[dict], metric: str, prefix: str = "") -> dict[str, list]:
  """``{"step", "value", "spread", "floor", "ceiling"}`` lists of one score over a run.

  Steps whose record lacks the metric are skipped; a missing spread, floor or ceiling is
  None.
  """
  key = prefix + metric
  rows = [r for r in records if key in r]
  return {"step": [r["step"] for r in rows], "value": [r[key] for r in rows],
          "spread": [r.get(key + "_spread") for r in rows],
          "floor": [r.get(key + "_floor") for r in rows],
          "ceiling": [r.get(key + "_ceiling") for r in rows]}


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("experiments.plot_scores draws with matplotlib, which jaxgan does not "
                      "require: pip install matplotlib") from e
  return plt


def _judge_of(workdir: str) -> str | None:
  try:
    return config_lib.read_config(workdir).get("eval", {}).get("judge") or None
  except (OSError, ValueError):
    return None


def _constant(values) -> float | None:
  """The value when every entry is the same number, else None."""
  values = [v for v in values if v is not None]
  return values[0] if values and all(v == values[0] for v in values) else None


def _references(ax, data, field: str, style: str, label: str, colours) -> list[float]:
  """Draws a floor or ceiling: one black line when every series shares it, else one per
  series in its colour (a constant one across the plot, a varying one along the steps)."""
  values = [_constant(s[field]) for _, s in data if s["step"]]
  if values and values[0] is not None and all(v == values[0] for v in values):
    ax.axhline(values[0], color="black", linestyle=style, linewidth=1, label=label)
    return values[:1]
  for i, (name, s) in enumerate(data):
    colour = colours[i % len(colours)]
    if _constant(s[field]) is not None:
      ax.axhline(_constant(s[field]), color=colour, linestyle=style, linewidth=1,
                 label=f"{name}: {label}")
    elif any(v is not None for v in s[field]):
      ax.plot(s["step"], s[field], color=colour, linestyle=style, linewidth=1,
              label=f"{name}: {label}")
  return [v for v in values if v is not None]


def plot_runs(workdirs: list[str], out: str, labels: list[str] | None = None,
              metrics: list[str] | None = None, logy: tuple[str, ...] = (),
              title: str | None = None) -> str:
  """Draws the runs' scores, one panel per metric, into the PNG ``out``.

  Args:
    workdirs: run folders, all WGAN or all CycleGAN.
    out: the PNG to write (folders are created).
    labels: legend names, one per run (default: the folders' names).
    metrics: panels in order (default: `DEFAULT_METRICS` of the runs' kind).
    logy: metrics drawn on a logarithmic y axis.
    title: the figure's title (default: the judge, from the first run's config.json).

  Returns:
    ``out``.

  Raises:
    ValueError: mixed WGAN and CycleGAN runs, a label count that does not match, or a
      metric no run recorded.
    ImportError: matplotlib is not installed (the message says how to install it).
  """
  if not workdirs:
    raise ValueError("give at least one run folder.")
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f"{len(labels)} labels for {len(workdirs)} runs.")
  runs = [eval_records(w) for w in workdirs]
  kinds = {run_kind(r) for r in runs}
  if len(kinds) > 1:
    raise ValueError("plot WGAN and CycleGAN runs separately: their scores differ.")
  kind = kinds.pop()
  metrics = list(metrics or DEFAULT_METRICS[kind])
  prefixes = [f"{d}_" for d in DIRECTIONS] if kind == "cyclegan" else [""]
  # One line per (run, direction).
  lines = [(f"{label} {p[:-1]}".strip() if kind == "cyclegan" else label, records, p)
           for label, records in zip(labels, runs) for p in prefixes]
  for metric in metrics:
    if not any(series(records, metric, p)["step"] for _, records, p in lines):
      recorded = sorted(k for k in runs[0][-1]
                        if not k.endswith(("_spread", "_floor", "_ceiling")))
      raise ValueError(f"no run recorded {metric!r}; the first run's last evaluation has "
                       f"{recorded}")

  plt = _pyplot()
  cols = min(2, len(metrics))
  rows = -(-len(metrics) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, metric in zip(axes.flat, metrics):
    data = [(name, series(records, metric, p)) for name, records, p in lines]
    for i, (name, s) in enumerate(data):
      if not s["step"]:
        continue
      colour = colours[i % len(colours)]
      spread = [0.0 if e is None else e for e in s["spread"]]
      low = [v - e for v, e in zip(s["value"], spread)]
      high = [v + e for v, e in zip(s["value"], spread)]
      ax.fill_between(s["step"], low, high, color=colour, alpha=0.15, linewidth=0)
      ax.errorbar(s["step"], s["value"], yerr=spread, color=colour, marker="o",
                  markersize=4, capsize=3, label=name)
    floor_name, ceiling_name = REFERENCES[kind]
    _references(ax, data, "floor", "--", f"floor ({floor_name})", colours)
    if metric in UNBOUNDED:
      ceilings = sorted({_constant(s["ceiling"]) for _, s in data} - {None})
    else:
      ceilings = _references(ax, data, "ceiling", ":", f"ceiling ({ceiling_name})", colours)
    heading = NAMES.get(metric, metric)
    if metric in UNBOUNDED and ceilings:
      heading += f"  ({ceiling_name} ceiling " + ", ".join(f"{c:.3g}" for c in ceilings) + ")"
    ax.set_title(heading, fontsize=10)
    ax.set_xlabel(X_LABELS[kind])
    if metric in logy:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(metrics):]:
    ax.set_visible(False)
  title = title or (f"judge {_judge_of(workdirs[0])}" if _judge_of(workdirs[0]) else None)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("give run folders, e.g. python -m experiments.plot_scores "
                         "--out scores.png runs/wgan_clip runs/wgan_gp")
  common.require("out", example="--out scores.png")
  try:
    plot_runs(workdirs, FLAGS.out, FLAGS.labels, FLAGS.metrics, tuple(FLAGS.logy),
              FLAGS.title)
  except ImportError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  print(f"wrote {FLAGS.out}", flush=True)


if __name__ == "__main__":
  common.run(main)
