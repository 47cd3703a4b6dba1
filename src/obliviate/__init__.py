"""obliviate: make text-to-image diffusion models forget or hide concepts, and measure what happened."""

__version__ = "0.1.0"
