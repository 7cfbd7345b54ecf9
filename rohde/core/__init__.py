"""Shared core: the signal chain, layouts, recording formats, the model package and errors.

Imported by `rohde.training` and `rohde.server` alike; imports nothing from either, never torch.
"""
