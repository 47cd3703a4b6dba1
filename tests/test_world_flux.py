"""The Flux world: a genuine FluxPipeline (double- and single-stream blocks, T5's tokens, CLIP's pooled embedding,
packed latents, flow matching, a distilled guidance input) on the world's domain, shipped as
``--model world-flux`` and judged by the SD world's detector and bench; its size, plain-diffusers loading and
quality bars are the SD world's tests, run on every world (test_world.py)."""

from __future__ import annotations

import pytest

import obliviate
from obliviate.world import world_info


@pytest.fixture(scope="module")
def flux():
    return obliviate.load_pipeline("world-flux")


def test_it_is_flux_in_layout(flux):
    from obliviate.attention import joint_names

    t = flux.transformer
    assert type(flux).__name__ == "FluxPipeline" and t.config.guidance_embeds  # Flux-dev's distilled guidance
    assert type(flux.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert flux.scheduler.config.use_dynamic_shifting  # the shift follows the image's token count
    assert t.config.num_layers == len(joint_names(t)) > 1 and t.config.num_single_layers > t.config.num_layers
    assert t.config.joint_attention_dim == flux.text_encoder_2.config.d_model  # the text tokens are T5's alone
    assert t.config.pooled_projection_dim == flux.text_encoder.config.hidden_size  # CLIP: the pooled embedding
    assert flux.tokenizer_2.get_vocab() != flux.tokenizer.get_vocab()
    assert world_info("world-flux")["family"] == "flux"


def test_it_samples_at_the_worlds_size_by_default(flux):
    """Flux's pipeline fixes 1024 px in code; a loaded world samples at the world's 32 px, as its methods train."""
    from obliviate.diffusion import image_size

    assert image_size(flux) == world_info("world-flux")["image_size"] == 32
    assert flux("a red circle", num_inference_steps=2, output_type="np").images.shape == (1, 32, 32, 3)
