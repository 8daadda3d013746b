r"""WGAN (lesson 12) configs: ``--config experiments/configs/wgan.py:VARIANT[,gp][,paper]``.

Variants:
  lsun           The lesson's run: LSUN bedrooms from the LMDB, 64x64, nz 100,
                 ngf = ndf = 64, one extra layer, RMSProp lr 1e-4 for both nets, clip
                 0.01. Each critic step sees 128 real and 128 fake images (the loader's
                 bs=128); the generator step uses bs = 64. Both passes are
                 ``train(1, False)``: 100 critic steps at generator iterations 0, 500,
                 1000, ... of each pass, else 5; the pass ends where the epoch does,
                 mid-burst if need be. Then one more pass at lr/10 with fresh optimizers.
                 bf16 compute. As fastai did, 20% of the bedrooms are held out (a seeded
                 split, for evaluation), and each image's short side is scaled to 64 and a
                 random 64x64 crop taken (stored 64x80, cropped on the device).
  folder         As ``lsun`` on any folder of images (searched recursively):
                 ``--config.data.path=/path/to/images``.
  fashion_mnist  Sized for a 2-core CPU: Fashion-MNIST padded to 32x32, 1 channel, held in
                 memory; ngf = ndf = 24, no extra layer, batch 64, RMSProp lr 5e-4 for
                 both nets (the lesson's 1e-4 is too slow for a 15-minute budget), 2500
                 generator iterations of 5 critic steps (25 while gen_iters < 25 and at
                 every 500th: the paper's schedule); fp32. Judged every 500 iterations on
                 2,000 samples by the Fashion-MNIST Darknet (runs/darknet_fmnist: train it
                 first, or set --config.eval.judge=).
  smoke          Tiny (isize 16, width 8, a few iterations on 256 Fashion-MNIST images),
                 for tests.

Modifiers (any of them, in any order, after the variant):
  ,gp            The improved WGAN: gradient penalty (lambda 10) instead of clipping,
                 Adam(1e-4, b1 0.5, b2 0.9), LayerNorm in the critic, 5 critic steps
                 throughout.
  ,ttur          WGAN-GP with the two time-scale update rule (Heusel et al. 2017): Adam
                 (b1 0, b2 0.9) at 3e-4 for the critic and 1e-4 for the generator, one
                 critic step a generator step.
  ,hinge         The hinge loss on a spectrally normalised critic (Miyato et al. 2018):
                 Adam(2e-4, b1 0, b2 0.9), 5 critic steps, no normalisation layers.
  ,ema           Sample from an exponential moving average of the generator's weights
                 (decay 0.999, with a warm-up; Yazici et al. 2019).
  ,upsample      A resize + conv generator (nearest, then a 3x3 conv) instead of
                 transposed convs, as the lesson suggests against checkerboards.
  ,best          The recipe jaxgan recommends for new work, the winner of a measured
                 comparison on Fashion-MNIST (docs/results.md): WGAN-GP, Adam 1e-3
                 (b1 0.5, b2 0.9) for both networks, 5 critic steps, transposed convs.
                 Recipe fields only: data, sizes, batch and budget stay the variant's.
  ,paper         The WGAN paper's schedule: 100 critic steps while the run's generator
                 iterations are under 25 (once per run) and at every 500th; batch 64 for
                 both steps.

Commands:
  python -m experiments.wgan --config experiments/configs/wgan.py:fashion_mnist \
      --workdir runs/wgan_fmnist
  python -m experiments.wgan --config experiments/configs/wgan.py:lsun \
      --config.data.path=/data/lsun/bedroom_train_lmdb --workdir runs/wgan_lsun
  # Faster on an accelerator: decode once (minutes to hours), then train from raw pixels.
  python -m experiments.prepare --config experiments/configs/wgan.py:lsun \
      --config.data.path=/data/lsun/bedroom_train_lmdb --out /data/lsun/bedroom_64x80
  python -m experiments.wgan --config experiments/configs/wgan.py:lsun \
      --config.data.prepared=/data/lsun/bedroom_64x80 --workdir runs/wgan_lsun
  python -m experiments.sample --workdir runs/wgan_fmnist --num 64 --out grid.png

Measured results: docs/results.md ("WGAN"); speed: docs/gpu.md, docs/results.md.
"""

import ml_collections

VARIANTS = ("lsun", "folder", "fashion_mnist", "smoke")
MODIFIERS = ("gp", "paper", "ttur", "hinge", "ema", "upsample", "best")


def get_config(variant: str = "lsun") -> ml_collections.ConfigDict:
  name, *mods = variant.split(",")
  if name not in VARIANTS or any(m not in MODIFIERS for m in mods):
    raise ValueError(f"unknown wgan variant {variant!r}: use one of {VARIANTS}, optionally "
                     f"followed by modifiers among {MODIFIERS} (',gp,ema'), e.g. "
                     "--config experiments/configs/wgan.py:lsun,gp")
  c = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  c.data.source = "lsun"  # fashion_mnist | folder | lsun
  c.data.path = ""  # image folder, or LSUN LMDB folder (e.g. bedroom_train_lmdb)
  c.data.fraction = 1.0  # a random sample of the files (the lesson's run: all of them)
  c.data.channels = 3
  c.data.num_workers = 8  # host decoding processes (folder / lsun); 0 = this process
  c.data.num_threads = 0  # host decoding threads per process; 0 = up to 8
  c.data.prefetch = 2  # blocks of real batches kept ready on the device
  c.data.data_dir = ""  # Fashion-MNIST IDX folder; "" = /usr/share/datasets/fashion-mnist
  c.data.cache_dir = ""  # LMDB key-list cache; "" = ~/.cache/jaxgan
  c.data.max_images = 0  # fashion_mnist only: keep the first N (tests)
  # folder / lsun: hold out a fixed share for evaluation (fastai held out 20% of the
  # lesson's LSUN CSV), a seeded split of the LMDB's keys or the folder's sorted files.
  c.data.heldout_fraction = 0.2
  c.data.split_seed = 42  # fastai's get_cv_idxs seed; its own split cannot be recovered
  # folder / lsun: stored isize x (isize + margin), cropped at random to isize x isize
  # on the device (fastai: short side to the size, random crop); 0 = centre crop
  c.data.margin = 16
  # folder / lsun decoded once by `python -m experiments.prepare` (the same --config):
  # training then reads raw pixels, held on the devices when they fit, else read from
  # the host's memory-mapped shards (jaxgan.data.prepared). Same batches either way.
  c.data.prepared = ""  # the prepared folder; "" = decode data.path while training
  c.data.placement = "auto"  # prepared: device | host | auto (device when it fits)

  c.model = ml_collections.ConfigDict()
  c.model.isize = 64  # a multiple of 16
  c.model.nz = 100
  c.model.ngf = 64
  c.model.ndf = 64
  c.model.n_extra_layers = 1
  c.model.upsample = ""  # "" = transposed convs (lesson); nearest | bilinear
  c.model.critic_norm = "batch"  # batch (lesson) | layer | none (WGAN-GP needs no batch)
  c.model.spectral_norm = False  # spectrally normalised critic convs (Miyato et al. 2018)

  c.loss = "wgan"  # wgan (weight clipping) | wgan-gp | hinge
  c.optimizer = "rmsprop"  # rmsprop (PyTorch's) | adam
  c.lr_g = 1e-4
  c.lr_d = 1e-4
  c.adam_b1 = 0.5
  c.adam_b2 = 0.9
  c.clip_value = 0.01
  c.gp_weight = 10.0
  # d_iters (jaxgan.train.wgan.critic_iterations): critic_iters_long at every
  # long_critic_every-th generator iteration of each pass ("lesson": train(1, False)), or
  # while the run's generator iterations are < long_critic_until and at every
  # long_critic_every-th of the run ("paper"); else critic_iters. 0 switches a rule off.
  c.critic_schedule = "lesson"
  c.critic_iters = 5
  c.critic_iters_long = 100
  c.long_critic_until = 25  # "paper" only
  c.long_critic_every = 500

  c.batch_size = 128  # real (and fake) images per critic step, global over every device
  c.gen_batch_size = 64  # the generator step's batch; 0 = batch_size
  c.num_epochs = 1.0  # passes over the data per phase (unless num_gen_iters > 0)
  c.num_gen_iters = 0  # > 0: generator iterations per phase instead
  c.second_phase = True  # the lesson's second pass at lr * second_phase_lr_factor
  c.second_phase_lr_factor = 0.1
  c.precision = "bf16"  # fp32 | bf16
  # > 0: keep an exponential moving average of the generator's weights (with a warm-up),
  # which galleries, evaluation and experiments.sample then use (jaxgan.train.wgan).
  c.ema_decay = 0.0
  c.seed = 0
  c.num_samples = 64  # the gallery: 8 x 8 on fixed noise
  c.log_every = 100  # generator iterations
  c.sample_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.stop_after_gen_iters = -1  # >= 0: stop (checkpointed) there; rerun to continue

  # Built-in evaluation (jaxgan.evaluation): every `every` generator iterations and at the
  # end, `samples` samples scored by the judge (FD, KID, precision/recall, memorisation,
  # class coverage) with floors (held-out real images) and ceilings (noise).
  c.eval = ml_collections.ConfigDict()
  c.eval.judge = ""  # "" = off; classifier:WORKDIR (a Darknet run) | inception:WEIGHTS.npz
  c.eval.every = 1000
  c.eval.samples = 10000
  c.eval.reference_images = 50000  # training images the samples are compared with; 0 = all
  c.eval.kid_subsets = 20  # KID's subsets during training (experiments.evaluate: 100)
  c.eval.heldout = ""  # folder/LSUN: other held-out images (default: data.heldout_fraction's)

  if name == "folder":
    c.data.source = "folder"
  elif name == "fashion_mnist":
    c.data.source = "fashion_mnist"
    c.data.margin = 0
    c.data.fraction = 1.0
    c.data.channels = 1
    c.data.num_workers = 0
    c.model.isize = 32
    c.model.ngf = 24
    c.model.ndf = 24
    c.model.n_extra_layers = 0
    c.lr_g = 5e-4
    c.lr_d = 5e-4
    c.critic_schedule = "paper"
    c.batch_size = 64
    c.gen_batch_size = 0
    c.critic_iters_long = 25
    c.num_gen_iters = 2500
    c.second_phase = False
    c.precision = "fp32"  # bf16 is emulated, slowly, on CPUs
    c.log_every = 50
    c.sample_every = 250
    c.checkpoint_every = 250
    # The Fashion-MNIST Darknet (experiments/configs/darknet.py:fashion_mnist) judges.
    c.eval.judge = "classifier:runs/darknet_fmnist"
    c.eval.every = 500
    c.eval.samples = 2000
    c.eval.reference_images = 0
  elif name == "smoke":
    c.data.source = "fashion_mnist"
    c.data.margin = 0
    c.data.fraction = 1.0
    c.data.channels = 1
    c.data.num_workers = 0
    c.data.max_images = 256
    c.model.isize = 16
    c.model.nz = 8
    c.model.ngf = 8
    c.model.ndf = 8
    c.model.n_extra_layers = 1
    c.critic_iters = 2
    c.critic_iters_long = 3
    c.long_critic_until = 1
    c.long_critic_every = 4
    c.batch_size = 8
    c.gen_batch_size = 4
    c.num_gen_iters = 3
    c.second_phase = True
    c.precision = "fp32"
    c.log_every = 2
    c.sample_every = 4
    c.checkpoint_every = 2
    c.eval.every = 3
    c.eval.samples = 64
    c.eval.reference_images = 256

  if "paper" in mods:
    c.critic_schedule = "paper"
    c.gen_batch_size = 0
    c.batch_size = 64
  if "gp" in mods or "ttur" in mods:
    c.loss = "wgan-gp"
    c.optimizer = "adam"
    c.lr_g = c.lr_d = 1e-4
    c.model.critic_norm = "layer"
    c.long_critic_until = 0
    c.long_critic_every = 0
  if "ttur" in mods:
    # Two time-scale update rule (Heusel et al. 2017): a critic that learns 3x faster
    # instead of 5 critic steps a generator step; Adam with no momentum (beta1 0).
    c.lr_d, c.lr_g = 3e-4, 1e-4
    c.adam_b1, c.adam_b2 = 0.0, 0.9
    c.critic_iters = c.critic_iters_long = 1
  if "hinge" in mods:
    # Hinge loss on a spectrally normalised critic (Miyato et al. 2018): no clipping, no
    # penalty, no normalisation layers; Adam(2e-4, 0, 0.9), 5 critic steps.
    c.loss = "hinge"
    c.model.spectral_norm = True
    c.model.critic_norm = "none"
    c.optimizer = "adam"
    c.lr_g = c.lr_d = 2e-4
    c.adam_b1, c.adam_b2 = 0.0, 0.9
    c.long_critic_until = 0
    c.long_critic_every = 0
  if "best" in mods:
    # The recipe jaxgan recommends, chosen by measurement (docs/results.md, "WGAN
    # recipes"): WGAN-GP (Gulrajani et al. 2017) with Adam at 1e-3 for both networks.
    # Recipe fields only; the variant keeps its data, sizes, batch and budget.
    c.loss = "wgan-gp"
    c.optimizer = "adam"
    c.lr_g = c.lr_d = 1e-3
    c.adam_b1, c.adam_b2 = 0.5, 0.9
    c.model.critic_norm = "layer"
    c.model.spectral_norm = False
    c.critic_iters = 5
    c.long_critic_until = 0
    c.long_critic_every = 0
  if "ema" in mods:
    c.ema_decay = 0.999  # sample from an average of the generator's weights
  if "upsample" in mods:
    c.model.upsample = "nearest"  # resize + 3x3 conv instead of transposed convs
  c.lock()
  return c
