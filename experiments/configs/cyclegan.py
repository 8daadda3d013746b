r"""CycleGAN (lesson 12) configs: ``--config experiments/configs/cyclegan.py:VARIANT``.

Variants:
  horse2zebra    The paper's settings: ResNet generator ngf=64 with 9 blocks, 70×70 PatchGAN
                 ndf=64, load 286 → random crop 256 + flip, batch 1, Adam 2e-4 (β 0.5,
                 0.999), 100 epochs constant + 100 decaying to zero, pool 50, λ_A = λ_B =
                 10, identity 0.5, bf16 compute. Reads tfds ``cycle_gan/horse2zebra``
                 (README, "CycleGAN").
  folder         The same on the reference's folder layout:
                 ``--config.data.path=DIR`` with DIR/trainA, trainB, testA, testB.
  fashion_mnist  A CPU-sized real task: Fashion-MNIST sneakers (A) ↔ ankle boots (B), A
                 from the first half of the training set (3,021 sneakers) and B from the
                 second (3,030 boots), so no pair exists. 28×28 zero-padded to 36
                 (load_size), random crop 32 + flip; ngf 16, 3 residual blocks, a 2-layer
                 PatchGAN (34×34 receptive field), batch 1, 3 + 3 epochs (18,180
                 iterations), fp32; the paper's losses, λ, pool and Adam. Judged each
                 epoch on 1,000 test images a direction by the Fashion-MNIST Darknet
                 (runs/darknet_fmnist: train it first, or set --config.eval.judge=).
  smoke          Tiny, for tests.

The reference's flags map to fields as docs/lesson.md ("CycleGAN") lists: --n_epochs and
--n_epochs_decay keep their names; --beta1 is adam_b1.

Commands:
  python -m experiments.cyclegan --config experiments/configs/cyclegan.py:fashion_mnist \
      --workdir runs/cyclegan_fmnist
  python -m experiments.translate --workdir runs/cyclegan_fmnist --direction AtoB \
      --input IN_DIR --output OUT_DIR

Measured results: docs/results.md ("CycleGAN"); speed: docs/gpu.md, docs/results.md.
"""

import ml_collections

VARIANTS = ("horse2zebra", "folder", "fashion_mnist", "smoke")


def get_config(variant: str = "horse2zebra") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown cyclegan variant {variant!r}: use one of {VARIANTS}, e.g. "
                     "--config experiments/configs/cyclegan.py:horse2zebra")
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict()
  c.data.source = "tfds"  # tfds | folder | fashion_mnist
  c.data.name = "horse2zebra"  # tfds: cycle_gan/<name>
  c.data.path = ""  # folder: holds trainA/, trainB/ (and testA/, testB/)
  c.data.data_dir = ""  # tfds data_dir, or the Fashion-MNIST IDX folder; "" = default
  c.data.channels = 3  # folder only (tfds cycle_gan is RGB, Fashion-MNIST grayscale)
  c.data.load_size = 286  # host: decode and resize to this square
  c.data.crop_size = 256  # device: random crop (a multiple of 4) and flip
  c.data.class_a = 7  # fashion_mnist: Sneaker
  c.data.class_b = 9  # fashion_mnist: Ankle boot
  c.data.max_images = 0  # > 0: only the first N training images of each domain
  c.data.on_device = True  # hold both domains (uint8, load_size) in device memory
  c.data.num_workers = 0  # host decoding processes when streaming; 0 = this process
  c.data.num_threads = 0  # host decoding threads per process; 0 = up to 8
  c.data.prefetch = 2  # batches kept ready on the device when streaming

  c.model = ml_collections.ConfigDict()
  c.model.ngf = 64
  c.model.n_blocks = 9  # 9 for 256², 6 for 128² (paper)
  c.model.dropout = 0.0  # the reference trains CycleGAN with --no_dropout
  c.model.ndf = 64
  c.model.n_layers_d = 3  # 3: 70×70 patches

  c.batch_size = 1  # global, split over every device
  c.lr = 2e-4
  c.adam_b1 = 0.5
  c.adam_b2 = 0.999
  c.n_epochs = 100  # constant learning rate
  c.n_epochs_decay = 100  # then linearly to zero, per epoch
  c.lambda_a = 10.0  # cycle A → B → A
  c.lambda_b = 10.0  # cycle B → A → B
  c.lambda_identity = 0.5  # identity weight, relative to λ
  c.pool_size = 50  # past fakes shown to the discriminators; 0 = none
  c.precision = "bf16"  # fp32 | bf16
  # > 0: keep an exponential moving average of both generators' weights (with a warm-up),
  # which sample grids, evaluation and experiments.translate then use. Off: on the
  # Fashion-MNIST run 0.999 improved one direction only (docs/results.md).
  c.ema_decay = 0.0
  c.seed = 0

  c.log_every = 100  # iterations
  c.sample_every = 1000
  c.checkpoint_every = 5000
  c.num_samples = 4  # test images of each domain in each sample grid
  c.keep_checkpoints = 3
  c.stop_after_step = -1  # >= 0: stop (checkpointed) after this step; rerun to continue

  # Built-in evaluation (jaxgan.evaluation.runs.CycleGANJudge): every `every` steps and at
  # the end, each direction's test translations scored by the judge against the target
  # domain (FD, KID, precision/recall, ...), the translation rate (classifier judges of
  # class domains) and the cycle error.
  c.eval = ml_collections.ConfigDict()
  c.eval.judge = ""  # "" = off; classifier:WORKDIR | inception:WEIGHTS.npz
  c.eval.every = 20000
  c.eval.samples = 0  # test images per direction; 0 = all (horse2zebra: 120 / 140)
  c.eval.reference_images = 0  # target-domain training images compared with; 0 = all
  c.eval.kid_subsets = 20  # KID's subsets during training (experiments.evaluate: 100)

  if variant == "folder":
    c.data.source = "folder"
  elif variant == "fashion_mnist":
    c.data.source = "fashion_mnist"
    c.data.channels = 1
    c.data.load_size = 36
    c.data.crop_size = 32
    c.model.ngf = 16
    c.model.n_blocks = 3
    c.model.ndf = 16
    c.model.n_layers_d = 2
    c.n_epochs = 3  # epochs of 3,030 iterations (|B| ankle boots)
    c.n_epochs_decay = 3
    c.precision = "fp32"  # bf16 is emulated, hence slower, on CPUs
    c.log_every = 500
    c.sample_every = 2000
    c.num_samples = 8
    # The Fashion-MNIST Darknet (experiments/configs/darknet.py:fashion_mnist) judges.
    c.eval.judge = "classifier:runs/darknet_fmnist"
    c.eval.every = 3030
    c.eval.samples = 1000
  elif variant == "smoke":
    c.data.source = "fashion_mnist"
    c.data.channels = 1
    c.data.load_size = 20
    c.data.crop_size = 16
    c.data.max_images = 12
    c.model.ngf = 4
    c.model.n_blocks = 1
    c.model.ndf = 4
    c.model.n_layers_d = 2
    c.batch_size = 2
    c.n_epochs = 1
    c.n_epochs_decay = 1
    c.pool_size = 3
    c.precision = "fp32"
    c.log_every = 4
    c.sample_every = 6
    c.checkpoint_every = 6
    c.num_samples = 2
    c.eval.every = 12
    c.eval.samples = 16
  c.lock()
  return c
