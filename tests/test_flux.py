"""The Flux family on tiny random layouts in the shape of diffusers' own Flux test components (with and without
the distilled guidance input): the conditioning is the pipeline's own (CLIP's pooled embedding, T5's tokens),
one denoiser call is the pipeline's (packing, position ids, sigma time, guidance), the partial sampler's sigmas
are the pipeline's (its resolution shift included), the joint processor is diffusers' when it only watches,
patches of another family are refused in one line, and a LoRA patch loads with diffusers' own Flux loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sd import check_lora_round_trip, load_mmdit, make_tiny_flux, make_tiny_sd3

import obliviate
from obliviate.attention import AttnCall, PromptMemory, joint_names
from obliviate.bench import Bench, Concept, Sampler
from obliviate.diffusion import FlowMatching, partial_sampler, training_scheduler
from obliviate.errors import ObliviateError
from obliviate.families import attention, encode, family_of, predict, segments
from obliviate.terms import token_positions

BENCH = Bench("tiny", [Concept("church", "object", ("a photo of the church", "church")),
                       Concept("tench", "object", ("a photo of the tench",))],
              images_per_concept=2, detector="clip", sampler=Sampler(steps=3, guidance=3.5))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    return {"schnell": make_tiny_flux(root), "dev": make_tiny_flux(root, guidance_embeds=True)}


@pytest.fixture(scope="module", params=["schnell", pytest.param("dev", marks=pytest.mark.slow)])  # dev: full suite
def flux(request, folders):
    pipe = load_mmdit(folders[request.param])
    pipe._variant = request.param
    return pipe


def test_the_conditioning_is_the_pipelines_own(flux):
    prompts = ["a photo of the church", "A Dog in the style of van gogh"]
    cond = encode(flux, prompts)
    states, pooled, _ = flux.encode_prompt(prompts, None, device="cpu")
    assert family_of(flux).key == "flux" and cond.states.shape == (2, 512, 32)  # T5's tokens
    torch.testing.assert_close(cond.states, states)
    torch.testing.assert_close(cond.pooled, pooled)  # CLIP's pooled output
    assert ("guidance" in cond.extra) == (flux._variant == "dev")
    assert token_positions(flux, ["a photo of the church"], ["church"])[0].nonzero().flatten().tolist() == [4]
    assert [s.start for s in segments(flux)] == [0]


def test_one_call_is_the_pipelines_denoising_step(flux):
    """Our predict on (B, C, H, W) latents == the transformer as FluxPipeline calls it on packed latents."""
    cond = encode(flux, ["a photo of the church", "a dog"])
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([800.0, 250.0])
    ours = predict(flux, x, t, cond)
    packed = flux._pack_latents(x, 2, 1, 16, 16)
    ids = flux._prepare_latent_image_ids(2, 8, 8, "cpu", x.dtype)
    guidance = torch.full((2,), 3.5) if flux._variant == "dev" else None
    theirs = flux.transformer(hidden_states=packed, timestep=t / 1000, guidance=guidance,
                              pooled_projections=cond.pooled, encoder_hidden_states=cond.states,
                              txt_ids=torch.zeros(512, 3), img_ids=ids).sample
    torch.testing.assert_close(ours, flux._unpack_latents(theirs, 16, 16, flux.vae_scale_factor))


def test_the_partial_sampler_has_the_pipelines_sigmas(flux):
    assert isinstance(training_scheduler(flux), FlowMatching)
    sampler = partial_sampler(flux, 4)
    seen = []

    def spy(_pipe, _i, t, kwargs):
        seen.append(float(t))
        return kwargs

    flux("a photo of the church", num_inference_steps=4, height=16, width=16, output_type="latent",
         callback_on_step_end=spy)
    assert sampler.timesteps.tolist() == pytest.approx(seen)


def test_the_joint_processor_is_diffusers_own_until_it_remembers(flux):
    model = flux.transformer
    cond = encode(flux, ["a photo of the church", "the church in the style of van gogh"])
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        ref = predict(flux, x, t, cond)
        with attention(flux) as names:
            call = AttnCall(token_mask=token_positions(flux, ["a photo of the church",
                                                              "the church in the style of van gogh"], ["church"]))
            watched = predict(flux, x, t, cond, attention=call)
            gen = torch.Generator().manual_seed(2)
            memory = PromptMemory(torch.randn(3, 32, generator=gen) * 10, torch.randn(3, 32, generator=gen) * 10)
            remembered = predict(flux, x, t, cond, attention=AttnCall(memory=memory))
    assert names == joint_names(model) == ["transformer_blocks.0.attn.processor"]  # the double-stream block
    torch.testing.assert_close(watched, ref, atol=1e-5, rtol=0)
    assert call.collected().numel() == 2 * 2 * 64  # 2 prompts x 2 heads x 8 x 8 image queries, one T5 token each
    assert (remembered - ref).abs().max() > 1e-3  # Flux normalises keys (RMSNorm): the memory's scale is not its pull
    assert type(model.attn_processors[names[0]]).__name__ == "FluxAttnProcessor"  # restored


def test_a_patch_of_one_family_is_refused_on_the_other(flux, tmp_path):
    sd3 = obliviate.load_pipeline(str(make_tiny_sd3(tmp_path)))
    on_flux = obliviate.erase(flux, "church", "uce", bench=BENCH, progress=False)
    assert on_flux.metadata["family"] == "flux"
    with pytest.raises(ObliviateError, match="made for a Flux model; this is a Stable Diffusion 3 pipeline"):
        on_flux.apply(sd3, force=True)
    on_sd3 = obliviate.erase(sd3, "church", "uce", bench=BENCH, progress=False)
    with pytest.raises(ObliviateError, match=r"made for a Stable Diffusion 3 model; this is a Flux pipeline"):
        on_sd3.apply(flux, force=True)


def test_a_lora_patch_loads_with_diffusers(flux, folders, tmp_path):
    check_lora_round_trip(flux, load_mmdit(folders[flux._variant]),
                          [("transformer", "transformer_blocks.0.attn.add_k_proj"),
                           ("transformer", "transformer_blocks.0.attn.add_v_proj"),
                           ("transformer", "single_transformer_blocks.0.attn.to_q")], BENCH, tmp_path)


def test_a_merged_model_draws_what_the_patch_does(flux, folders, tmp_path):
    patch = obliviate.erase(flux, "church", "uce", bench=BENCH, progress=False)
    patched = obliviate.generate(flux, "a photo of the church", n=2, patch=patch, bench=BENCH, progress=False)
    merged = load_mmdit(obliviate.save_merged(load_mmdit(folders[flux._variant]), [patch], tmp_path / "merged"))
    assert np.array_equal(obliviate.generate(merged, "a photo of the church", n=2, bench=BENCH, progress=False),
                          patched)


def test_a_learned_token_has_a_row_in_clip_and_t5(flux):
    from obliviate.inversion import LearnedTokens, installed, row_width

    assert row_width(flux) == 32 + 32  # CLIP's (the pooled embedding), T5's (the text tokens)
    plain = encode(flux, ["a photo of the church"])
    with installed(flux, LearnedTokens(["<t0>"], torch.randn(1, 64) * 3)) as phrase:
        learned = encode(flux, [f"a photo of the {phrase}"])
    assert (learned.states - plain.states).abs().max() > 0 and (learned.pooled - plain.pooled).abs().max() > 0
