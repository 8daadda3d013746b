"""jaxgan: lesson 12 of fast.ai's 2018 course (Darknet, WGAN, CycleGAN) in JAX."""

__version__ = "0.1.0"
