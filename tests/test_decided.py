"""The probe that tells concepts the world decides in its noisiest steps (a colour, gore) from those it decides
late (a texture), and Lethe's ``auto`` preset that acts on it."""

from __future__ import annotations

import obliviate
from obliviate.catalog import catalog_for
from obliviate.decided import prompt_contrast


def test_the_world_still_reads_gore_at_noise_level_0_9_and_not_striped(pipe):
    """rho at 32 images, seeds 0-2 (docs/methods.md): gore 1.07-1.09, striped 0.90; 16 images, seed 0: 1.079, 0.917."""
    catalog = catalog_for(pipe)
    assert prompt_contrast(pipe, catalog.concept("gore"), catalog, n=16) > 1.03
    assert prompt_contrast(pipe, catalog.concept("striped"), catalog, n=16) < 0.97


def test_lethe_auto_takes_the_early_preset_for_gore_and_says_why(pipe):
    patch = obliviate.erase(pipe, "gore", "lethe", preset="auto", steps=2, batch_size=1, n_images=2, rounds=0,
                            keep_weight=0.0, progress=False)
    meta = patch.metadata
    assert meta["preset"] == "auto" and meta["preset_chosen"] == "early-decided"
    assert meta["prompt_contrast"]["gore"] > 1
    config = meta["config"]
    assert config["t_max"] == 0.9 and config["adversary"]["steps"] == 3  # the preset's, under the user's options
    assert config["keep_weight"] == 0.0 and config["steps"] == 2
