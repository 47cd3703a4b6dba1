"""attn2 processors: same outputs as diffusers' SDPA processor, correct per-batch capture, EOT handling."""

import pytest
import torch

from obliviate.attention import AttnCall, PromptMemory, attn2_names, attn2_processors, kwargs
from obliviate.errors import ObliviateError
from obliviate.terms import token_positions


def _inputs(pipe, prompts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        cond = pipe.text_encoder(ids).last_hidden_state
    z = torch.randn(len(prompts), 4, 8, 8, generator=gen)
    t = torch.tensor([500] * len(prompts))
    return z, t, cond


def test_processor_matches_sdpa_with_and_without_capture(pipe, caplog):
    unet = pipe.unet
    prompts = ["a photo of a circle", "a red star in dotted style"]
    z, t, cond = _inputs(pipe, prompts)
    with torch.no_grad():
        ref = unet(z, t, cond).sample
        with attn2_processors(unet):
            plain = unet(z, t, cond).sample
            call = AttnCall(token_mask=token_positions(pipe, prompts, ["circle", "star"]))
            captured = unet(z, t, cond, cross_attention_kwargs=kwargs(call)).sample
    assert torch.allclose(ref, plain, atol=1e-5)
    assert torch.allclose(ref, captured, atol=1e-5)
    assert len(call.captured) == len(attn2_names(unet))
    assert "will be ignored" not in caplog.text  # self-attention layers take the per-call state quietly


def test_capture_is_per_batch_element(pipe):
    """Batch of two prompts with the concept at different positions == each prompt alone."""
    unet = pipe.unet
    prompts = ["a photo of a circle", "a big shiny circle drawing"]
    z, t, cond = _inputs(pipe, prompts)
    with torch.no_grad(), attn2_processors(unet):
        call = AttnCall(token_mask=token_positions(pipe, prompts, ["circle"]))
        unet(z, t, cond, cross_attention_kwargs=kwargs(call))
        both = call.collected()
        singles = []
        for i, p in enumerate(prompts):
            one = AttnCall(token_mask=token_positions(pipe, [p], ["circle"]))
            unet(z[i:i + 1], t[i:i + 1], cond[i:i + 1], cross_attention_kwargs=kwargs(one))
            singles.append(one.collected())
    # the batched capture holds exactly the single captures' values (grouped by layer, not by prompt)
    alone = torch.cat(singles)
    assert both.numel() == alone.numel()
    assert torch.allclose(both.sort().values, alone.sort().values, atol=1e-6)


def test_eot_means_the_first_end_of_text_not_the_pads(pipe):
    tok = pipe.tokenizer
    mask = token_positions(pipe, ["a photo of a circle"], ["circle"], include_eot=True)
    ids = tok(["a photo of a circle"], padding="max_length", max_length=tok.model_max_length).input_ids[0]
    assert tok.pad_token_id == tok.eos_token_id  # SD 1.x convention: pads are end-of-text tokens
    assert mask.sum() == 2
    assert mask[0, ids.index(tok.eos_token_id)]


def test_missing_concept_word_is_a_clear_error(pipe):
    with pytest.raises(ObliviateError, match="cannot find"):
        token_positions(pipe, ["a photo of a square"], ["circle"])


def test_empty_capture_is_an_error():
    with pytest.raises(ObliviateError, match="no attention was captured"):
        AttnCall().collected()


def test_prompt_memory_changes_output_only_where_installed(pipe):
    unet = pipe.unet
    z, t, cond = _inputs(pipe, ["a photo of a circle"])
    width = cond.shape[-1]
    gen = torch.Generator().manual_seed(1)
    memory = PromptMemory(torch.randn(4, width, generator=gen), torch.randn(4, width, generator=gen))
    with torch.no_grad():
        ref = unet(z, t, cond).sample
        with attn2_processors(unet, memory, placement="mid") as names:
            mid = unet(z, t, cond).sample
            none = unet(z, t, cond, cross_attention_kwargs=kwargs(AttnCall(memory=None))).sample
        assert names and all(n.startswith("mid_block") for n in names)
        assert torch.allclose(none, ref, atol=1e-5)  # a per-call state replaces the installed memory
        after = unet(z, t, cond).sample
    assert not torch.allclose(ref, mid, atol=1e-4)
    assert torch.equal(ref, after)  # processors restored
