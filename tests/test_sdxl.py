"""The SDXL family on a tiny random layout in the shape of diffusers' own SDXL test components: the conditioning
is the pipeline's own, every edit that reaches the text encoders reaches both, patches and keys of one family
are refused on the other in one line, and a LoRA patch loads with diffusers' own SDXL loader."""

from __future__ import annotations

import pytest
import torch
from tiny_sd import check_lora_round_trip, make_tiny_sdxl

import obliviate
from obliviate.bench import Bench, Concept, Sampler
from obliviate.errors import ObliviateError
from obliviate.families import encode, family_of, token_embeddings
from obliviate.inversion import LearnedTokens, installed

BENCH = Bench("tiny", [Concept("church", "object", ("a photo of the church", "church")),
                       Concept("tench", "object", ("a photo of the tench",))],
              images_per_concept=2, detector="clip", sampler=Sampler(steps=3, guidance=7.5))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="module")
def xl(folder):
    return obliviate.load_pipeline(str(folder))


def test_the_conditioning_is_the_pipelines_own(xl):
    cond = encode(xl, ["a photo of the church", ""])
    states, negative, pooled, negative_pooled = xl.encode_prompt(["a photo of the church"], device="cpu",
                                                                 do_classifier_free_guidance=True)
    assert family_of(xl).key == "sdxl" and cond.states.shape == (2, 77, 64)  # both encoders' 32 side by side
    torch.testing.assert_close(cond.states[:1], states)
    torch.testing.assert_close(cond.pooled[:1], pooled)
    # the empty prompt is SDXL's zero unconditional branch (force_zeros_for_empty_prompt)
    assert torch.equal(cond.states[1:], negative) and torch.equal(cond.pooled[1:], negative_pooled)
    assert cond.extra["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]] * 2  # what the pipeline adds at 64 px


def test_learned_tokens_enter_both_text_encoders(xl):
    width = token_embeddings(xl).shape[1]
    assert width == 64
    before = encode(xl, ["a photo of the church"])
    rows = torch.randn(1, width) * 3
    with installed(xl, LearnedTokens(["<t0>"], rows)) as phrase:
        assert xl.text_encoder.get_input_embeddings().weight[-1].tolist() == rows[0, :32].tolist()
        assert xl.text_encoder_2.get_input_embeddings().weight[-1].tolist() == rows[0, 32:].tolist()
        learned = encode(xl, [f"a photo of the {phrase}"])
    assert len(xl.tokenizer) == len(xl.tokenizer_2) == xl.text_encoder.get_input_embeddings().weight.shape[0]
    gap = (learned.states - before.states).abs()
    assert gap[..., :32].max() > 0 and gap[..., 32:].max() > 0 and (learned.pooled != before.pooled).any()


def test_advunlearn_edits_both_text_encoders(xl):
    patch = obliviate.erase(xl, "church", "advunlearn", bench=BENCH, steps=2, batch_size=1, ddim_steps=3,
                            attack_steps=1, attack_tokens=2, progress=False)
    parts = {k.split(".")[1] for k in patch.tensors}
    assert parts == {"text_encoder", "text_encoder_2"} and patch.metadata["family"] == "sdxl"


def test_a_patch_of_one_family_is_refused_on_the_other(xl, tmp_path):
    sd = obliviate.load_pipeline("world")
    on_sd = obliviate.erase(sd, "circle", "uce", progress=False)
    on_xl = obliviate.erase(xl, "church", "uce", bench=BENCH, progress=False)
    with pytest.raises(ObliviateError, match=r"made for a Stable Diffusion 1.x / 2.x model; this is a Stable "
                                             r"Diffusion XL pipeline \(StableDiffusionXLPipeline\)"):
        on_sd.apply(xl, force=True)
    with pytest.raises(ObliviateError, match="made for a Stable Diffusion XL model; this is a Stable Diffusion "
                                             "1.x / 2.x pipeline"):
        obliviate.generate(sd, "a red circle", n=1, patch=on_xl, progress=False)


def test_cli_refuses_a_patch_of_another_family_before_loading(xl, folder, tmp_path, capsys):
    from obliviate.cli import main

    patch = tmp_path / "xl.safetensors"
    obliviate.erase(xl, "church", "uce", bench=BENCH, progress=False).save(patch)
    out = tmp_path / "x.png"
    assert main(["generate", "--prompt", "a red circle", "--patch", str(patch), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "made for a Stable Diffusion XL model; world is a Stable Diffusion" in err
    assert not out.exists()


def test_a_lora_patch_on_unet_and_both_encoders_loads_with_diffusers(xl, folder, tmp_path):
    check_lora_round_trip(xl, obliviate.load_pipeline(str(folder)),
                          [("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"),
                           ("unet", "up_blocks.0.attentions.1.transformer_blocks.1.attn2.to_v"),
                           ("text_encoder", "encoder.layers.1.self_attn.q_proj"),
                           ("text_encoder_2", "text_model.encoder.layers.2.self_attn.v_proj")], BENCH, tmp_path,
                          scale=0.5)

def test_uce_edits_only_the_pooled_columns_of_the_added_embedding(xl):
    patch = obliviate.erase(xl, "church", "uce", bench=BENCH, progress=False)
    delta = patch.tensors["delta.unet.add_embedding.linear_1.weight"]
    pooled = xl.text_encoder_2.config.projection_dim
    assert delta[:, :pooled].abs().max() > 0 and not delta[:, pooled:].any()  # the time ids' columns untouched
    without = obliviate.erase(xl, "church", "uce", bench=BENCH, pooled=False, progress=False)
    assert "delta.unet.add_embedding.linear_1.weight" not in without.tensors


def test_the_empty_prompt_reaches_the_pipeline_as_its_zero_conditioning(xl):
    """SDXL's pipeline encodes a positive "" through both encoders; the seam means its zero conditioning (what
    the completion probe's neutral prompt must be: the unconditional branch SDXL samples with)."""
    from obliviate.families import prompt_call

    call = prompt_call(xl, ["", "a photo of the church"])
    assert not call["prompt_embeds"][0].any() and not call["pooled_prompt_embeds"][0].any()
    torch.testing.assert_close(call["prompt_embeds"][1:], encode(xl, ["a photo of the church"]).states)
    assert not call["negative_prompt_embeds"].any()
    positive, *_ = xl.encode_prompt([""], device="cpu", do_classifier_free_guidance=False)
    assert positive.abs().max() > 0  # what the string "" would have been
