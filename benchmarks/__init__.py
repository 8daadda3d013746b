"""Measurement: how fast jaxgan's real training steps run, and why (not part of jaxgan)."""
