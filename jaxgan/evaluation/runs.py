"""Judging GAN runs: the real images a run is measured against, the scores of a WGAN's
samples and of a CycleGAN's translations, and the hooks that record them during training.

A WGAN's samples are compared with its training images (the reference) and placed between
a floor, held-out real images (Fashion-MNIST's test split; for folders and LSUN the images
the run's split holds out, or ``eval.heldout``'s), and a ceiling, noise
(`jaxgan.evaluation.report.Reference`).

A CycleGAN is judged per direction: the translations of the source domain's test images
against the target domain (its training images as the reference, its test images as the
floor), plus the translation rate (the share of translations a classifier judge calls the
target class) and the cycle reconstruction error (mean |G_B(G_A(a)) - a| in [-1, 1]).

Every held-out set is checked by content before it is used (`check_heldout`): a floor
measured on training images would come out near zero, and the memorisation threshold it
sets would collapse, so copies would go unflagged.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from jaxgan.data import folder, prepared
from jaxgan.data.classification import fashion_mnist_images
from jaxgan.evaluation import judges, report
from jaxgan.images import fit_to

# Scores worth a line in a log; the rest go to metrics.jsonl.
HEADLINE = ("fd", "kid", "precision", "recall", "classes_covered", "memorisation")


def flatten(scores: dict, prefix: str = "") -> dict[str, float]:
  """``{metric: {value, spread, ...}}`` → ``{prefix+metric: value, ..._spread: spread}``."""
  out = {}
  for metric, s in scores.items():
    out[prefix + metric] = s["value"]
    out[prefix + metric + "_spread"] = s["spread"]
  return out


def references(scores: dict, prefix: str = "") -> dict[str, float]:
  """The floors and ceilings of a report, flat: ``{prefix+metric+'_floor': f, ...}``."""
  out = {}
  for metric, s in scores.items():
    if s["floor"] is not None:
      out[prefix + metric + "_floor"] = s["floor"]
      out[prefix + metric + "_ceiling"] = s["ceiling"]
  return out


def table(scores: dict) -> str:
  """A printable table: metric, value, spread, floor, ceiling."""
  fmt = lambda v: "-" if v is None else f"{v:.4g}"
  rows = [("metric", "value", "spread", "floor", "ceiling")]
  rows += [(m, fmt(s["value"]), fmt(s["spread"]), fmt(s["floor"]), fmt(s["ceiling"]))
           for m, s in scores.items()]
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def check_heldout(train: np.ndarray, heldout: np.ndarray, train_total: int, *, what: str,
                  fix: str, tolerance: float = 0.01) -> None:
  """Refuses held-out images that are training images, by content.

  Each held-out image is hashed (its uint8 pixels as the judge sees them) and looked up
  among ``train``: the training images the judge holds, all ``train_total`` of them or a
  random sample. The share found, scaled by ``train_total / len(train)``, estimates the
  share of the held-out set that is training images; above ``tolerance`` (a few natural
  duplicates pass) it is an error naming ``fix``.

  Raises:
    ValueError: the held-out set holds training images.
  """
  digest = lambda x: hashlib.sha1(np.ascontiguousarray(x).tobytes()).digest()
  seen = {digest(x) for x in train}
  found = sum(digest(x) in seen for x in heldout)
  share = found * (train_total / max(1, len(train))) / max(1, len(heldout))
  if share > tolerance:
    raise ValueError(
        f"{what}: {found} of the {len(heldout)} held-out images checked are training "
        f"images (an estimated {min(share, 1.0):.0%} of the held-out set), so the floor and "
        f"the memorisation threshold would be measured on training data: {fix}")


def _subset_rows(total: int, n: int, seed: int) -> np.ndarray:
  """Sorted rows of a seeded random ``n`` of ``total`` (all of them when ``n`` is 0)."""
  if not n or total <= n:
    return np.arange(total)
  return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


# ----------------------------------------------------------------------------- WGAN

def wgan_real_images(config, split: str, max_images: int = 0,
                     seed: int = 0) -> tuple[np.ndarray, int]:
  """Real images as a WGAN run saw them, and how many the split holds in all.

  ``split``: "train" (the run's training images) or "heldout" (Fashion-MNIST's test
  split; for folders and LSUN the ``eval.heldout`` folder / LMDB if set, else the images
  the run's split holds out, `folder.split_source`). ``max_images`` > 0 takes a seeded
  random subset.

  Returns:
    ``(images, total)``: uint8 (N, isize, isize, C), and the split's size.
  """
  d, isize = config.data, config.model.isize
  if d.source == "fashion_mnist":
    images = fashion_mnist_images(isize, "train" if split == "train" else "test", d.data_dir)
    return images[_subset_rows(len(images), max_images, seed)], len(images)
  if d.prepared and not (split == "heldout" and config.eval.heldout):
    return _prepared_images(config, split, max_images, seed)
  # Framed as training stores them (isize × (isize + margin)), then the centre window
  # (fastai's validation crop): the same images a prepared set gives (`_prepared_images`).
  width = isize + d.margin
  if split == "heldout" and config.eval.heldout:  # the user's own held-out images
    lmdb = d.source == "lsun" and os.path.exists(folder._lmdb_data_file(config.eval.heldout))  # pylint: disable=protected-access
    source = (folder.LmdbSource(config.eval.heldout, isize, d.channels, width=width) if lmdb
              else folder.ImageFolderSource(config.eval.heldout, isize, d.channels,
                                            width=width))
  else:  # this side of the run's own split
    try:
      source = folder.split_source(d, isize, config.seed, split, width=width)
    except ValueError as e:
      raise ValueError(f"judging a folder or LSUN run needs real images it never trained "
                       f"on: {e}") from None
  images = np.stack([source[int(i)]["image"]
                     for i in _subset_rows(len(source), max_images, seed)])
  return prepared.centre_crop(images, isize), len(source)


def _prepared_images(config, split: str, max_images: int, seed: int):
  """`wgan_real_images` from a prepared set: its readable images, centre-cropped."""
  d, isize = config.data, config.model.isize
  images = prepared.open_part(d.prepared, split, size=isize, margin=d.margin,
                              channels=d.channels, heldout_fraction=d.heldout_fraction,
                              split_seed=d.split_seed)
  items = np.arange(len(images))
  if split == "train":  # the run's own sample of its training split
    items = folder.sample_rows(len(images), d.fraction, config.seed)
  items = items[~images.unreadable[items]]
  rows = items[_subset_rows(len(items), max_images, seed)]
  return prepared.centre_crop(images.take(rows), isize), len(items)


class WGANJudge:
  """Scores batches of a WGAN's samples against its data; the reference is built once."""

  def __init__(self, config, judge: judges.Judge, num_fake: int,
               pixel_memorisation: bool = False, kid_subsets: int = 100):
    e = config.eval
    self.train, train_total = wgan_real_images(config, "train", e.reference_images,
                                               config.seed)
    self.heldout, _ = wgan_real_images(config, "heldout", num_fake, config.seed + 1)
    heldout = ("Fashion-MNIST's test split" if config.data.source == "fashion_mnist"
               else f"eval.heldout={config.eval.heldout!r}" if config.eval.heldout
               else f"the held-out split of {config.data.path}")
    check_heldout(self.train, self.heldout, train_total, what=heldout,
                  fix="set --config.eval.heldout to images the run never trains on.")
    self.reference = report.Reference(judge.extract, self.train, self.heldout, num_fake,
                                      seed=config.seed, pixel_memorisation=pixel_memorisation,
                                      kid_subsets=kid_subsets,
                                      kid_subset_size=min(1000, num_fake))

  def score(self, fakes: np.ndarray) -> dict:
    return self.reference.score(fakes)


# ----------------------------------------------------------------------------- CycleGAN

def _stack(source, n: int = 0, seed: int | None = None) -> np.ndarray:
  """The first ``n`` images of a source (all for 0), or a seeded random ``n``."""
  if seed is None or not n or n >= len(source):
    rows = range(len(source) if not n else min(n, len(source)))
  else:
    rows = np.sort(np.random.default_rng(seed).choice(len(source), n, replace=False))
  return np.stack([source[int(i)]["image"] for i in rows])


class CycleGANJudge:
  """Scores both directions of a CycleGAN: translations, their rate, the cycle error.

  Args:
    config: the run's config.
    domains: its `jaxgan.data.unaligned.Domains`.
    judge: the `judges.Judge`.
    num_images: test images per direction (0: all of them).
  """

  def __init__(self, config, domains, judge: judges.Judge, num_images: int = 0,
               pixel_memorisation: bool = False, kid_subsets: int = 100):
    crop = (config.data.crop_size,) * 2
    self.judge = judge
    for domain, (train_source, test_source) in {
        "A": (domains.train_a, domains.test_a), "B": (domains.train_b, domains.test_b)}.items():
      if test_source is train_source:
        raise ValueError(
            f"{domains.description} has no test{domain}/: judging needs images of each "
            f"domain that training never sees. Add test{domain}/ (and test"
            f"{'B' if domain == 'A' else 'A'}/) beside train{domain}/, or set "
            "--config.eval.judge= to train without evaluation.")
    test = {"A": fit_to(_stack(domains.test_a, num_images), crop),
            "B": fit_to(_stack(domains.test_b, num_images), crop)}
    n = config.eval.reference_images
    train = {"A": fit_to(_stack(domains.train_a, n, config.seed), crop),
             "B": fit_to(_stack(domains.train_b, n, config.seed), crop)}
    for domain, train_source in (("A", domains.train_a), ("B", domains.train_b)):
      check_heldout(train[domain], test[domain], len(train_source),
                    what=f"test{domain} of {domains.description}",
                    fix=f"test{domain} must hold images that train{domain} does not.")
    self.sources = {"AtoB": test["A"], "BtoA": test["B"]}
    self.targets = {"AtoB": "B", "BtoA": "A"}
    self.references = {
        direction: report.Reference(judge.extract, train[target], test[target],
                                    len(self.sources[direction]), seed=config.seed,
                                    pixel_memorisation=pixel_memorisation,
                                    kid_subsets=kid_subsets,
                                    kid_subset_size=min(1000, len(self.sources[direction]),
                                                        len(test[target])))
        for direction, target in self.targets.items()}
    # Fashion-MNIST domains are classes of the judge: the rate says whether they changed.
    # Its floor is the rate of real target images (a perfect translation), its ceiling
    # that of the untranslated source images (no translation at all).
    self.target_class, self.rate_references = None, {}
    if config.data.source == "fashion_mnist" and judge.class_names is not None:
      self.target_class = {"AtoB": config.data.class_b, "BtoA": config.data.class_a}
      for direction, target in self.targets.items():
        cls = self.target_class[direction]
        self.rate_references[direction] = (self._rate(test[target], cls),
                                           self._rate(self.sources[direction], cls))

  def _rate(self, images, cls) -> float:
    _, probs = self.judge.extract(images)
    return float(np.mean(np.argmax(probs, axis=1) == cls))

  def score(self, translate) -> dict:
    """``translate(direction, images uint8) -> (fakes uint8, cycle error float)``.

    Returns ``{direction: {metric: {value, spread, floor, ceiling}}}``; ``cycle_error``
    carries no floor or ceiling (None).
    """
    out = {}
    for direction, images in self.sources.items():
      fakes, cycle_error = translate(direction, images)
      scores = self.references[direction].score(fakes)
      if self.target_class is not None:
        rate = self._rate(fakes, self.target_class[direction])
        floor, ceiling = self.rate_references[direction]
        scores["translation_rate"] = {
            "value": rate, "spread": float(np.sqrt(rate * (1 - rate) / len(fakes))),
            "floor": floor, "ceiling": ceiling}
      scores["cycle_error"] = {"value": float(cycle_error), "spread": 0.0, "floor": None,
                               "ceiling": None}
      out[direction] = scores
    return out
