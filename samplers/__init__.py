"""Hyperbatch samplers in the k-diffusion calling convention."""
