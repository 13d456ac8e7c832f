"""Reconstruction: from detected faces to model parameters (landmark-anchored start, colour fit, aligned crops)."""
