"""PyTorch versions of jaxgan's three training steps: the benchmark's side-by-side rows.

Benchmark code, not part of the library, and the only place in the project that imports
torch at module level: ``benchmarks.benchmark`` imports this module lazily, and only when
torch is installed (it is never a requirement). The networks are written from the lesson
and the original repositories (docs/lesson.md) as a PyTorch user of the lesson would
write them, so that "jaxgan vs PyTorch" compares the same work, layer for layer:

* ``Darknet`` (31,410,922 parameters), its step: gather a batch from uint8 images held on
  the device, random flip + pad 4 + random crop there (as jaxgan does), cross-entropy,
  ``SGD(momentum, weight_decay)`` (PyTorch's L2).
* ``DCGAN_G`` / ``DCGAN_D`` (3,613,696 / 2,802,560 at isize 64), a WGAN generator
  iteration: ``critic_iters`` critic steps (clamp to ±c first, a real batch and a fresh
  fake one made in train mode without a graph) with RMSprop, then one generator step.
* ``ResnetGenerator`` (11,378,179) and the 70×70 ``NLayerDiscriminator`` (2,764,737), one
  CycleGAN iteration as the reference's ``optimize_parameters`` does it: the generators'
  step (LSGAN + cycle + identity, discriminators frozen), the 50-image pools, the
  discriminators' step (× 0.5), one Adam per pair.

Each ``*_torch_step(config)`` takes the same ``ml_collections`` config the jaxgan benchmark
set-up gets and returns ``(step, images_per_step)``: ``step()`` runs one training step on
random uint8 images of the config's shapes (speed does not depend on their content) and
returns its losses as tensors, without a host sync; ``step.modules`` holds the networks. Learning rates are the first step's
(jaxgan's schedules cost nothing measurable). Precision follows ``config.precision``:
fp32, or autocast to bf16 / fp16 (fp16 with a ``GradScaler``, Darknet only, as in
jaxgan). Convs run channels-last (NHWC in memory), the layout PyTorch recommends for
them on GPUs and with oneDNN on CPUs (on this project's shared 2-core CPU, at the lesson's
sizes, channels-last and NCHW were within the run-to-run noise of each other);
``compile=True`` wraps each network in ``torch.compile``.
"""

from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Step = Callable[[], dict]


def default_device() -> torch.device:
  """The first CUDA GPU when there is one, else the CPU."""
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def count_params(module: nn.Module) -> int:
  """Trainable parameters as PyTorch counts them (BatchNorm running statistics excluded)."""
  return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- Darknet

def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 1) -> nn.Sequential:
  """The lesson's ``conv_layer``: conv (no bias, padding ks//2) → BatchNorm → LeakyReLU(0.1)."""
  return nn.Sequential(
      nn.Conv2d(ni, nf, ks, stride, padding=ks // 2, bias=False),
      nn.BatchNorm2d(nf, eps=1e-5, momentum=0.01),
      nn.LeakyReLU(0.1, inplace=True))


class ResLayer(nn.Module):
  """``x + conv3x3(conv1x1(x))``, the 1×1 squeezing to ``ni * ratio`` channels."""

  def __init__(self, ni: int, ratio: float = 0.5):
    super().__init__()
    mid = max(1, int(ni * ratio))
    self.conv1 = conv_layer(ni, mid, ks=1)
    self.conv2 = conv_layer(mid, ni, ks=3)

  def forward(self, x):
    # Out of place: the lesson's x.add_ saves memory, but autograd needs x for BN's backward.
    return x + self.conv2(self.conv1(x))


class Darknet(nn.Module):
  """The lesson's Darknet: stem, then per group a conv (stride ``2 - (i == 1)``) doubling
  the channels and ``nb`` ResLayers; adaptive average pool; Linear.

  Args:
    num_blocks: ResLayers per group.
    num_classes: outputs of the head.
    nf: channels of the stem.
    in_channels: image channels.
    bottleneck: ResLayer squeeze ratio (0.5 in the lesson).
  """

  def __init__(self, num_blocks=(1, 2, 4, 6, 3), num_classes: int = 10, nf: int = 32,
               in_channels: int = 3, bottleneck: float = 0.5):
    super().__init__()
    layers = [conv_layer(in_channels, nf, ks=3, stride=1)]
    for i, nb in enumerate(num_blocks):
      layers.append(conv_layer(nf, nf * 2, stride=2 - (i == 1)))
      layers.extend(ResLayer(nf * 2, bottleneck) for _ in range(nb))
      nf *= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(nf, num_classes)]
    self.layers = nn.Sequential(*layers)

  def forward(self, x):
    return self.layers(x)


# ----------------------------------------------------------------------------- DCGAN

def _dcgan_init(module: nn.Module) -> None:
  # The WGAN reference's init: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), bias 0.
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


def conv_block(ni: int, no: int, ks: int, stride: int, bn: bool = True) -> nn.Sequential:
  """The lesson's ConvBlock: conv (no bias, padding ks//2//stride) → LeakyReLU(0.2) → BN."""
  layers = [nn.Conv2d(ni, no, ks, stride, padding=ks // 2 // stride, bias=False),
            nn.LeakyReLU(0.2, inplace=True)]
  if bn:
    layers.append(nn.BatchNorm2d(no))
  return nn.Sequential(*layers)


def deconv_block(ni: int, no: int, ks: int, stride: int, pad: int) -> nn.Sequential:
  """The lesson's DeconvBlock: transposed conv (no bias) → ReLU → BN."""
  return nn.Sequential(nn.ConvTranspose2d(ni, no, ks, stride, padding=pad, bias=False),
                       nn.ReLU(inplace=True), nn.BatchNorm2d(no))


class DCGAN_D(nn.Module):  # pylint: disable=invalid-name  (the lesson's name)
  """The lesson's critic: one score per example (the mean of the final 1×1 map)."""

  def __init__(self, isize: int = 64, nc: int = 3, ndf: int = 64, n_extra_layers: int = 1):
    super().__init__()
    layers = [conv_block(nc, ndf, 4, 2, bn=False)]
    layers += [conv_block(ndf, ndf, 3, 1) for _ in range(n_extra_layers)]
    csize, cndf = isize // 2, ndf
    while csize > 4:
      layers.append(conv_block(cndf, cndf * 2, 4, 2))
      cndf, csize = cndf * 2, csize // 2
    layers.append(nn.Conv2d(cndf, 1, 4, padding=0, bias=False))
    self.layers = nn.Sequential(*layers)
    _dcgan_init(self)

  def forward(self, x):
    # Per example, as jaxgan's critic; the lesson's .mean(0) is the same loss.
    return self.layers(x).float().mean(dim=(1, 2, 3))


class DCGAN_G(nn.Module):  # pylint: disable=invalid-name  (the lesson's name)
  """The lesson's generator: noise (N, nz) → images (N, nc, isize, isize) in [-1, 1]."""

  def __init__(self, isize: int = 64, nz: int = 100, nc: int = 3, ngf: int = 64,
               n_extra_layers: int = 1):
    super().__init__()
    self.nz = nz
    cngf, tisize = ngf // 2, 4
    while tisize < isize:
      cngf, tisize = cngf * 2, tisize * 2
    layers = [deconv_block(nz, cngf, 4, 1, 0)]
    csize = 4
    while csize < isize // 2:
      layers.append(deconv_block(cngf, cngf // 2, 4, 2, 1))
      cngf, csize = cngf // 2, csize * 2
    layers += [deconv_block(cngf, cngf, 3, 1, 1) for _ in range(n_extra_layers)]
    layers += [nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
    self.layers = nn.Sequential(*layers)
    _dcgan_init(self)

  def forward(self, z):
    return self.layers(z.view(z.shape[0], self.nz, 1, 1))


# ----------------------------------------------------------------------------- CycleGAN

def _cyclegan_init(module: nn.Module) -> None:
  # The reference's init_weights('normal', 0.02): conv weights N(0, 0.02), biases 0.
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
  """[reflect pad 1, conv 3×3, IN, ReLU, (dropout), reflect pad 1, conv 3×3, IN] + skip."""

  def __init__(self, dim: int, dropout: float = 0.0):
    super().__init__()
    layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
              nn.ReLU(inplace=True)]
    if dropout > 0:
      layers.append(nn.Dropout(dropout))
    layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim)]
    self.block = nn.Sequential(*layers)

  def forward(self, x):
    return x + self.block(x)


class ResnetGenerator(nn.Module):
  """CycleGAN's ResNet generator: c7s1-ngf, two stride-2 convs, n blocks, two stride-2
  transposed convs (output_padding 1), c7s1-nc, tanh. Convs carry a bias (IN has none)."""

  def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
               dropout: float = 0.0):
    super().__init__()
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.InstanceNorm2d(ngf),
              nn.ReLU(inplace=True)]
    features = ngf
    for _ in range(2):  # zero padding here, as in the reference
      layers += [nn.Conv2d(features, features * 2, 3, 2, 1), nn.InstanceNorm2d(features * 2),
                 nn.ReLU(inplace=True)]
      features *= 2
    layers += [ResnetBlock(features, dropout) for _ in range(n_blocks)]
    for _ in range(2):
      layers += [nn.ConvTranspose2d(features, features // 2, 3, 2, 1, output_padding=1),
                 nn.InstanceNorm2d(features // 2), nn.ReLU(inplace=True)]
      features //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(features, output_nc, 7), nn.Tanh()]
    self.model = nn.Sequential(*layers)
    _cyclegan_init(self)

  def forward(self, x):
    return self.model(x)


class NLayerDiscriminator(nn.Module):
  """The PatchGAN (70×70 for n_layers 3): raw scores, one per patch."""

  def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
    super().__init__()
    layers = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    mult = 1
    for n in range(1, n_layers):
      prev, mult = mult, min(2**n, 8)
      layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1), nn.InstanceNorm2d(ndf * mult),
                 nn.LeakyReLU(0.2, inplace=True)]
    prev, mult = mult, min(2**n_layers, 8)
    layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), nn.InstanceNorm2d(ndf * mult),
               nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
    self.model = nn.Sequential(*layers)
    _cyclegan_init(self)

  def forward(self, x):
    return self.model(x)


class ImagePool:
  """The reference's pool of past fakes: until full, store and return each new fake; then
  with probability 0.5 return a random stored one and store the new one in its place."""

  def __init__(self, size: int, seed: int = 0):
    self.size, self.images, self.rng = size, [], random.Random(seed)

  def query(self, fakes: torch.Tensor) -> torch.Tensor:
    if self.size == 0:
      return fakes
    out = []
    for image in fakes.split(1):
      if len(self.images) < self.size:
        self.images.append(image)
        out.append(image)
      elif self.rng.random() > 0.5:
        slot = self.rng.randrange(self.size)
        out.append(self.images[slot].clone())
        self.images[slot] = image
      else:
        out.append(image)
    return torch.cat(out)


# ----------------------------------------------------------------------------- device-side data

class _Images:
  """uint8 NHWC images held on the device, and the per-example augmentations jaxgan does
  inside its jitted steps (flip, pad, crop), done here on the same device tensors."""

  def __init__(self, images, device, seed: int, channels_last: bool):
    self.images = images.to(device)
    self.device, self.channels_last = device, channels_last
    self.gen = torch.Generator(device=device)
    self.gen.manual_seed(seed)

  def _randint(self, high: int, n: int):
    return torch.randint(0, high, (n,), generator=self.gen, device=self.device)

  def flip(self, x):
    """Each image mirrored left-right with probability 0.5."""
    mask = torch.rand(x.shape[0], generator=self.gen, device=self.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(2), x)

  @staticmethod
  def pad(x, pad: int, mode: str):
    """Pads H and W of NHWC images; ``mode`` is numpy's (symmetric repeats the edge)."""
    if pad == 0:
      return x
    if mode == "constant":
      return F.pad(x, (0, 0, pad, pad, pad, pad))
    edge = 0 if mode == "symmetric" else 1  # reflect mirrors about the edge pixel
    for axis in (1, 2):
      n = x.shape[axis]
      before = x.narrow(axis, edge, pad).flip(axis)
      after = x.narrow(axis, n - pad - edge, pad).flip(axis)
      x = torch.cat([before, x, after], dim=axis)
    return x

  def crop(self, x, size: int):
    """A random size×size window of each NHWC image, chosen per example."""
    n, h, w, _ = x.shape
    if (h, w) == (size, size):
      return x
    offsets = torch.arange(size, device=self.device)
    rows = (self._randint(h - size + 1, n)[:, None] + offsets)[:, :, None]
    cols = (self._randint(w - size + 1, n)[:, None] + offsets)[:, None, :]
    return x[torch.arange(n, device=self.device)[:, None, None], rows, cols]

  def to_float(self, x, mean: float | list, std: float | list):
    """uint8 NHWC → float NCHW ``(x/255 - mean) / std``; NHWC in memory when channels-last
    (permuting an NHWC tensor to NCHW *is* the channels-last layout: no copy)."""
    x = x.permute(0, 3, 1, 2).float()
    if not self.channels_last:
      x = x.contiguous()
    mean = torch.as_tensor(mean, device=self.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, device=self.device).view(1, -1, 1, 1)
    return (x / 255.0 - mean) / std


def _random_uint8(shape, seed: int) -> torch.Tensor:
  gen = torch.Generator().manual_seed(seed)
  return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)


def _prepare(module: nn.Module, device, channels_last: bool, compile: bool):  # pylint: disable=redefined-builtin
  module = module.to(device)
  if channels_last:
    module = module.to(memory_format=torch.channels_last)
  # The optimizer holds the eager module's parameters; the compiled wrapper shares them.
  return module, (torch.compile(module) if compile else module)


def _autocast(device, precision: str):
  dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
  return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _options(device, channels_last):
  device = default_device() if device is None else torch.device(device)
  return device, True if channels_last is None else channels_last


# ----------------------------------------------------------------------------- the steps

def darknet_torch_step(config, compile: bool = False, device=None,  # pylint: disable=redefined-builtin
                       channels_last: bool | None = None) -> tuple[Step, int]:
  """jaxgan's Darknet step in PyTorch: gather, flip/pad/crop, forward, backward, SGD.

  Args:
    config: an ``experiments/configs/darknet.py`` config (model.name darknet).
    compile: wrap the network in ``torch.compile``.
    device: default: the first CUDA GPU, else the CPU.
    channels_last: NHWC memory for the convs (default True).

  Returns:
    ``(step, images_per_step)``; ``step()`` returns ``{"loss": tensor}``.
  """
  if config.model.name != "darknet":
    raise NotImplementedError(f"no PyTorch version of model {config.model.name!r}")
  device, channels_last = _options(device, channels_last)
  size, channels = (28, 1) if config.data.source == "fashion_mnist" else (32, 3)
  batch = config.batch_size
  # As jaxgan's benchmark: four batches of images on the device, a fixed batch of indices
  # gathered inside every step.
  data = _Images(_random_uint8((4 * batch, size, size, channels), config.seed), device,
                 config.seed, channels_last)
  labels = torch.randint(0, 10, (4 * batch,), generator=torch.Generator().manual_seed(1))
  labels = labels.to(device)
  indices = torch.randperm(4 * batch, generator=torch.Generator().manual_seed(2))[:batch]
  indices = indices.to(device)
  model, forward = _prepare(
      Darknet(tuple(config.model.num_blocks), 10, config.model.nf, channels,
              config.model.bottleneck), device, channels_last, compile)
  model.train()
  # The first step of jaxgan's one cycle trains at max_lr/div with momentum moms[0].
  opt = torch.optim.SGD(model.parameters(), lr=config.max_lr / config.div,
                        momentum=config.moms[0], weight_decay=config.weight_decay)
  autocast = _autocast(device, config.precision)
  scaler = torch.amp.GradScaler(device.type, init_scale=config.initial_loss_scale,
                                enabled=config.precision == "fp16")

  def step():
    x = data.crop(data.pad(data.flip(data.images[indices]), config.pad, config.pad_mode), size)
    x = data.to_float(x, 0.5, 0.25)  # any statistics: speed does not depend on them
    y = labels[indices]
    with autocast():
      logits = forward(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return {"loss": loss.detach()}

  step.modules = {"model": model}
  return step, batch


def wgan_torch_step(config, compile: bool = False, device=None,  # pylint: disable=redefined-builtin
                    channels_last: bool | None = None) -> tuple[Step, int]:
  """A WGAN generator iteration in PyTorch: ``critic_iters`` critic steps, one G step.

  Each critic step clamps the critic to ±clip_value, then trains on a real batch
  (``batch_size`` uint8 images on the device, to [-1, 1]) and a fresh fake batch the
  generator makes in train mode without a graph (the lesson's ``fake.data``); RMSprop.
  The generator step uses ``gen_batch_size`` (0: ``batch_size``) with the critic frozen.

  Returns:
    ``(step, critic_iters * batch_size)`` as jaxgan's benchmark counts it; ``step()``
    returns ``{"Loss_D": ..., "Loss_G": ...}``.
  """
  if config.loss != "wgan" or config.optimizer != "rmsprop":
    raise NotImplementedError("only the lesson's WGAN (clipping, RMSprop) has a PyTorch "
                              f"version, not loss={config.loss!r} / {config.optimizer!r}")
  if config.model.upsample or config.model.critic_norm != "batch":
    raise NotImplementedError("only the lesson's DCGAN nets have a PyTorch version")
  device, channels_last = _options(device, channels_last)
  m, nc = config.model, config.data.channels
  batch, gen_batch = config.batch_size, config.gen_batch_size or config.batch_size
  n_critic = config.critic_iters
  torch.manual_seed(config.seed)
  generator, gen_forward = _prepare(DCGAN_G(m.isize, m.nz, nc, m.ngf, m.n_extra_layers),
                                    device, channels_last, compile)
  critic, critic_forward = _prepare(DCGAN_D(m.isize, nc, m.ndf, m.n_extra_layers), device,
                                    channels_last, compile)
  generator.train()
  critic.train()
  opt_g = torch.optim.RMSprop(generator.parameters(), lr=config.lr_g)
  opt_d = torch.optim.RMSprop(critic.parameters(), lr=config.lr_d)
  # One block of real batches per generator iteration, on the device, as jaxgan's benchmark.
  data = _Images(_random_uint8((n_critic * batch, m.isize, m.isize, nc), config.seed), device,
                 config.seed, channels_last)
  autocast = _autocast(device, config.precision)
  noise = lambda n: torch.randn(n, m.nz, generator=data.gen, device=device)
  clip = config.clip_value

  def step():
    for j in range(n_critic):
      with torch.no_grad():
        for p in critic.parameters():
          p.clamp_(-clip, clip)
      real = data.to_float(data.images[j * batch:(j + 1) * batch], 0.5, 0.5)
      with autocast():
        with torch.no_grad():
          fake = gen_forward(noise(batch))
        loss_d = critic_forward(real).mean() - critic_forward(fake).mean()
      opt_d.zero_grad(set_to_none=True)
      loss_d.backward()
      opt_d.step()
    for p in critic.parameters():  # the lesson's make_trainable(netD, False)
      p.requires_grad_(False)
    with autocast():
      loss_g = critic_forward(gen_forward(noise(gen_batch))).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    for p in critic.parameters():
      p.requires_grad_(True)
    return {"Loss_D": loss_d.detach(), "Loss_G": loss_g.detach()}

  step.modules = {"generator": generator, "critic": critic}
  return step, n_critic * batch


def cyclegan_torch_step(config, compile: bool = False, device=None,  # pylint: disable=redefined-builtin
                        channels_last: bool | None = None) -> tuple[Step, int]:
  """One CycleGAN iteration in PyTorch, as the reference's ``optimize_parameters``.

  Real A and B: ``batch_size`` uint8 images of ``load_size`` on the device, random
  ``crop_size`` crop + flip there, to [-1, 1]. Then the generators' step with the
  discriminators frozen (LSGAN + λ-weighted cycle L1 + identity), the pools, and the
  discriminators' step (0.5·(MSE(D(real), 1) + MSE(D(pooled fake), 0)) each).

  Returns:
    ``(step, batch_size)``; ``step()`` returns the eight losses the reference logs.
  """
  device, channels_last = _options(device, channels_last)
  d, m = config.data, config.model
  # As jaxgan.train.cyclegan.image_channels: Fashion-MNIST grey, tfds cycle_gan RGB.
  nc = {"fashion_mnist": 1, "tfds": 3}.get(d.source, d.channels)
  batch = config.batch_size
  torch.manual_seed(config.seed)
  nets = {}
  for name in ("G_A", "G_B"):
    nets[name] = _prepare(ResnetGenerator(nc, nc, m.ngf, m.n_blocks, m.dropout), device,
                          channels_last, compile)
  for name in ("D_A", "D_B"):
    nets[name] = _prepare(NLayerDiscriminator(nc, m.ndf, m.n_layers_d), device,
                          channels_last, compile)
  for module, _ in nets.values():
    module.train()
  g_a, g_b, d_a, d_b = (nets[k][1] for k in ("G_A", "G_B", "D_A", "D_B"))
  discriminators = [nets["D_A"][0], nets["D_B"][0]]
  params = lambda *names: [p for k in names for p in nets[k][0].parameters()]
  adam = lambda p: torch.optim.Adam(p, lr=config.lr, betas=(config.adam_b1, config.adam_b2))
  opt_g, opt_d = adam(params("G_A", "G_B")), adam(params("D_A", "D_B"))
  domain_a = _Images(_random_uint8((batch, d.load_size, d.load_size, nc), config.seed), device,
                     config.seed, channels_last)
  domain_b = _Images(_random_uint8((batch, d.load_size, d.load_size, nc), config.seed + 1),
                     device, config.seed + 1, channels_last)
  pool_a, pool_b = ImagePool(config.pool_size, 0), ImagePool(config.pool_size, 1)
  autocast = _autocast(device, config.precision)
  lsgan = lambda score, real: torch.mean((score.float() - float(real)) ** 2)
  l1 = lambda x, y: torch.mean(torch.abs(x.float() - y.float()))
  lambda_a, lambda_b, lambda_idt = config.lambda_a, config.lambda_b, config.lambda_identity

  def real(domain):
    return domain.to_float(domain.flip(domain.crop(domain.images, d.crop_size)), 0.5, 0.5)

  def set_requires_grad(modules, flag: bool):
    for module in modules:
      for p in module.parameters():
        p.requires_grad_(flag)

  def step():
    real_a, real_b = real(domain_a), real(domain_b)
    set_requires_grad(discriminators, False)
    with autocast():
      fake_b = g_a(real_a)
      rec_a = g_b(fake_b)
      fake_a = g_b(real_b)
      rec_b = g_a(fake_a)
      losses = {"G_A": lsgan(d_a(fake_b), True), "G_B": lsgan(d_b(fake_a), True),
                "cycle_A": lambda_a * l1(rec_a, real_a),
                "cycle_B": lambda_b * l1(rec_b, real_b)}
      if lambda_idt > 0:
        losses["idt_A"] = lambda_b * lambda_idt * l1(g_a(real_b), real_b)
        losses["idt_B"] = lambda_a * lambda_idt * l1(g_b(real_a), real_a)
    opt_g.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    opt_g.step()
    set_requires_grad(discriminators, True)
    pooled_b = pool_b.query(fake_b.detach())
    pooled_a = pool_a.query(fake_a.detach())
    with autocast():
      losses["D_A"] = 0.5 * (lsgan(d_a(real_b), True) + lsgan(d_a(pooled_b), False))
      losses["D_B"] = 0.5 * (lsgan(d_b(real_a), True) + lsgan(d_b(pooled_a), False))
    opt_d.zero_grad(set_to_none=True)
    (losses["D_A"] + losses["D_B"]).backward()
    opt_d.step()
    return {k: v.detach() for k, v in losses.items()}

  step.modules = {name: module for name, (module, _) in nets.items()}
  return step, batch


STEPS = {
    "darknet": darknet_torch_step,
    "wgan": wgan_torch_step,
    "cyclegan": cyclegan_torch_step,
}
