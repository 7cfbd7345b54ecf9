"""Shared core: imported by both `rohde.training` and `rohde.server`; never imports torch."""
