"""The SDXL world: a genuine StableDiffusionXLPipeline on the world's domain, shipped as ``--model world-sdxl``,
judged by the SD world's detector and bench; its size, plain-diffusers loading and quality bars are the SD
world's tests, run on both worlds (test_world.py)."""

from __future__ import annotations

import pytest

import obliviate
from obliviate.world import world_info


@pytest.fixture(scope="module")
def xl():
    return obliviate.load_pipeline("world-sdxl")


def test_it_is_sdxl_in_layout(xl):
    from obliviate.attention import attn2_names

    unet = xl.unet
    assert type(xl).__name__ == "StableDiffusionXLPipeline" and type(xl.scheduler).__name__ == "EulerDiscreteScheduler"
    widths = xl.text_encoder.config.hidden_size, xl.text_encoder_2.config.hidden_size
    assert widths[0] != widths[1] and unet.config.cross_attention_dim == sum(widths)
    assert type(xl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert unet.config.addition_embed_type == "text_time" and unet.config.down_block_types[0] == "DownBlock2D"
    assert max(unet.config.transformer_layers_per_block) > 1 and len(attn2_names(unet)) > 0
    assert xl.config.force_zeros_for_empty_prompt
    assert world_info("world-sdxl")["family"] == "sdxl"


def test_cli_refuses_an_sd_patch_on_world_sdxl_before_loading(pipe, tmp_path, capsys):
    from obliviate.cli import main

    patch = tmp_path / "sd.safetensors"
    obliviate.erase(pipe, "circle", "uce", progress=False).save(patch)
    out = tmp_path / "x.json"
    assert main(["eval", "--model", "world-sdxl", "--patch", str(patch), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "made for a Stable Diffusion 1.x / 2.x model; world-sdxl is a Stable " \
                                            "Diffusion XL model" in err
    assert not out.exists()


def test_a_style_reaches_the_sdxl_unet_through_the_pooled_embedding(xl, detector):
    """On world-sdxl 'striped' is drawn from the pooled embedding alone: an edit of cross-attention (UCE as its
    authors' SDXL script does it, ``pooled=False``) leaves it; UCE with the pooled columns erases it."""
    from obliviate.bench import world_bench
    from obliviate.eval.mscore import generate_concepts, m_scores

    bench = world_bench()
    striped = bench.concept("striped")

    def m(patch) -> float:
        with patch.applied(xl):
            images = generate_concepts(xl, [striped], 16, 0, bench.sampler, progress=False)
        return m_scores(detector, images)["striped"]

    assert m(obliviate.erase(xl, "striped", "uce", pooled=False, progress=False)) >= 0.9
    assert m(obliviate.erase(xl, "striped", "uce", progress=False)) <= 0.1
