"""Darknet (lesson 12) configs: ``--config experiments/configs/darknet.py:VARIANT``.

Variants:
  cifar10        The lesson's recipe: Darknet([1, 2, 4, 6, 3], nf=32), batch 256, SGD with
                 momentum, lr 1.3, wd 1e-4, 30 epochs as one cycle with
                 use_clr_beta=(20, 20, 0.95, 0.85), bf16 compute (the lesson trained in
                 fp32 on one GPU). Reads the tfds ``cifar10`` data set (README, "Darknet").
  dawnbench      fast.ai's DAWNBench recipe: wrn_22, fp16 with dynamic loss scaling
                 starting at 512 (they used a static 512), wd 2e-4,
                 use_clr_beta=(50, 15, 0.95, 0.85), global batch 1024 (128 per GPU on 8
                 V100s). max_lr and num_epochs (1.3, 30) are jaxgan's starting point: the
                 entry's are not published with it.
  fashion_mnist  The quick start, sized for minutes on a 2-core CPU: Darknet([1, 1, 1, 1],
                 nf=8) (209,298 parameters) on Fashion-MNIST (Debian's
                 dataset-fashion-mnist), batch 32, lr 0.15, 4 epochs as one cycle, flips
                 but no random crop, fp32. It is also the judge of the Fashion-MNIST GANs.
  smoke          Tiny, for tests and a first try: 64 Fashion-MNIST images, runs offline.

Commands:
  python -m experiments.darknet --config experiments/configs/darknet.py:fashion_mnist \
      --workdir runs/darknet_fmnist
  python -m experiments.darknet --mode eval --workdir runs/darknet_fmnist [--tta]

Measured results: docs/results.md ("Darknet"); speed: docs/gpu.md, docs/results.md.
"""

import ml_collections

VARIANTS = ("cifar10", "dawnbench", "fashion_mnist", "smoke")


def get_config(variant: str = "cifar10") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown darknet variant {variant!r}: use one of {VARIANTS}, e.g. "
                     "--config experiments/configs/darknet.py:cifar10")
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # tfds | fashion_mnist
  c.data.name = "cifar10"  # tfds: the data set
  c.data.data_dir = ""  # tfds data_dir, or the Fashion-MNIST IDX folder; "" = default
  c.data.max_images = 0  # > 0: only the first N training images (quick experiments)
  c.data.max_test_images = 0  # > 0: only the first N test images

  c.model = ml_collections.ConfigDict()
  c.model.name = "darknet"  # darknet | wrn_22 | wide_resnet
  c.model.num_blocks = (1, 2, 4, 6, 3)
  c.model.nf = 32
  c.model.bottleneck = 0.5  # ResLayer squeeze ratio: 0.5 = ni//2 (lesson), 2.0 = widen
  c.model.num_groups = 3  # wide_resnet knobs
  c.model.blocks_per_group = 3
  c.model.k = 6
  c.model.start_nf = 16

  c.batch_size = 256  # global: split over every device
  c.eval_batch_size = 1000
  c.num_epochs = 30
  c.max_lr = 1.3
  c.div = 20.0
  c.pct = 20.0
  c.moms = (0.95, 0.85)
  c.weight_decay = 1e-4
  c.pad = 4  # padding before the random crop: sz // 8
  # fastai 0.7 pads with cv2.BORDER_REFLECT, which repeats the edge pixel: numpy's
  # "symmetric". "reflect" (edge not repeated) and "constant" (zeros) are the others.
  c.pad_mode = "symmetric"
  c.precision = "bf16"  # fp32 | bf16 | fp16
  c.initial_loss_scale = 2.0**15  # fp16 only
  c.max_skipped_in_a_row = 50  # fp16: more overflowed steps in a row than this halt the run
  c.target_accuracy = 0.94
  c.seed = 0
  c.keep_checkpoints = 3
  c.stop_after_epoch = -1  # >= 0: stop (checkpointed) after this epoch; rerun to continue

  if variant == "dawnbench":
    c.model.name = "wrn_22"
    c.batch_size = 1024
    c.weight_decay = 2e-4
    c.div, c.pct = 50.0, 15.0
    c.precision = "fp16"
    c.initial_loss_scale = 512.0
  elif variant == "fashion_mnist":
    c.data.source = "fashion_mnist"
    # Sized for minutes on a 2-core CPU (docs/results.md, "How the quick start got
    # there"): a fourth group (64 -> 128 channels on 4x4 maps) costs little time, since
    # this small net's time goes to its 28x28 and 14x14 maps; batch 32 keeps those maps
    # in the CPU's caches; with 4 epochs the random crop only slowed learning, the flips
    # stay.
    c.model.num_blocks = (1, 1, 1, 1)
    c.model.nf = 8
    c.batch_size = 32
    c.eval_batch_size = 500
    c.num_epochs = 4
    c.max_lr = 0.15
    c.pad = 0
    c.precision = "fp32"
    c.target_accuracy = 0.92
  elif variant == "smoke":  # offline: Fashion-MNIST from Debian's package
    c.data.source = "fashion_mnist"
    c.model.num_blocks = (1, 1)
    c.model.nf = 4
    c.batch_size = 16
    c.eval_batch_size = 16
    c.num_epochs = 2
    c.data.max_images = 64
    c.data.max_test_images = 40
    c.precision = "fp32"
    c.target_accuracy = 0.5
  c.lock()
  return c
