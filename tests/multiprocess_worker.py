"""Trains each system's smoke run in this process; tests/test_multiprocess.py launches it
as 1 process of 4 CPU devices and as 2 processes of 2 (jax.distributed over loopback)."""

import sys

from absl import flags

from conftest import override
from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import parallel
from jaxgan.train import cyclegan, darknet, wgan


def main(workdir: str, image_folder: str):
  parallel.maybe_initialize_distributed()
  darknet.train_and_evaluate(override(darknet_configs.get_config("smoke"), num_epochs=1),
                             f"{workdir}/darknet")
  wgan.train_and_evaluate(override(wgan_configs.get_config("smoke"), num_gen_iters=2,
                                   second_phase=False), f"{workdir}/wgan")
  # A streamed folder: each process decodes only its own rows of each batch.
  cyclegan.train_and_evaluate(override(
      cyclegan_configs.get_config("smoke"), batch_size=4, stop_after_step=2,
      **{"data.source": "folder", "data.on_device": False, "data.path": image_folder}),
      f"{workdir}/cyclegan")


if __name__ == "__main__":
  flags.FLAGS(sys.argv[:1])
  main(sys.argv[1], sys.argv[2])
