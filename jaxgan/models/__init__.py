"""Flax Linen modules for the three systems of lesson 12."""

from jaxgan.models.darknet import Darknet, ResLayer, WideResNet, wrn_22
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator
