"""attn2 processors: same outputs as diffusers' SDPA processor, correct per-batch capture, EOT handling."""

import pytest
import torch

from obliviate.attention import Attn2Processor, Capture, PromptMemory, attn2_names, attn2_processors, token_positions
from obliviate.errors import ObliviateError


def _inputs(model, prompts, seed=0):
    pipe = model.pipe
    gen = torch.Generator().manual_seed(seed)
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        cond = pipe.text_encoder(ids).last_hidden_state
    z = torch.randn(len(prompts), 4, 8, 8, generator=gen)
    t = torch.tensor([500] * len(prompts))
    return z, t, cond


def test_processor_matches_sdpa_with_and_without_capture(world_model):
    unet = world_model.pipe.unet
    prompts = ["a photo of a circle", "a red star in dotted style"]
    z, t, cond = _inputs(world_model, prompts)
    with torch.no_grad():
        ref = unet(z, t, cond).sample
        capture = Capture()
        with attn2_processors(unet, Attn2Processor(capture)):
            plain = unet(z, t, cond).sample
            capture.reset(token_positions(world_model.pipe.tokenizer, prompts, ["circle", "star"]))
            captured = unet(z, t, cond).sample
    assert torch.allclose(ref, plain, atol=1e-5)
    assert torch.allclose(ref, captured, atol=1e-5)
    assert len(capture.probs) == len(attn2_names(unet))


def test_capture_is_per_batch_element(world_model):
    """Batch of two prompts with the concept at different positions == each prompt alone."""
    unet, tok = world_model.pipe.unet, world_model.pipe.tokenizer
    prompts = ["a photo of a circle", "a big shiny circle drawing"]
    z, t, cond = _inputs(world_model, prompts)
    capture = Capture()
    with torch.no_grad(), attn2_processors(unet, Attn2Processor(capture)):
        capture.reset(token_positions(tok, prompts, ["circle"]))
        unet(z, t, cond)
        both = capture.collected()
        singles = []
        for i, p in enumerate(prompts):
            capture.reset(token_positions(tok, [p], ["circle"]))
            unet(z[i:i + 1], t[i:i + 1], cond[i:i + 1])
            singles.append(capture.collected())
    # the batched capture holds exactly the single captures' values (grouped by layer, not by prompt)
    alone = torch.cat(singles)
    assert both.numel() == alone.numel()
    assert torch.allclose(both.sort().values, alone.sort().values, atol=1e-6)


def test_eot_means_the_first_end_of_text_not_the_pads(world_model):
    tok = world_model.pipe.tokenizer
    mask = token_positions(tok, ["a photo of a circle"], ["circle"], include_eot=True)
    ids = tok(["a photo of a circle"], padding="max_length", max_length=tok.model_max_length).input_ids[0]
    assert tok.pad_token_id == tok.eos_token_id  # SD 1.x convention: pads are end-of-text tokens
    assert mask.sum() == 2
    assert mask[0, ids.index(tok.eos_token_id)]


def test_missing_concept_word_is_a_clear_error(world_model):
    with pytest.raises(ObliviateError, match="cannot find"):
        token_positions(world_model.pipe.tokenizer, ["a photo of a square"], ["circle"])


def test_empty_capture_is_an_error():
    with pytest.raises(ObliviateError, match="no attention was captured"):
        Capture().collected()


def test_prompt_memory_changes_output_only_where_installed(world_model):
    unet = world_model.pipe.unet
    z, t, cond = _inputs(world_model, ["a photo of a circle"])
    width = cond.shape[-1]
    gen = torch.Generator().manual_seed(1)
    memory = PromptMemory(torch.randn(4, width, generator=gen), torch.randn(4, width, generator=gen))
    with torch.no_grad():
        ref = unet(z, t, cond).sample
        with attn2_processors(unet, Attn2Processor(memory=memory), placement="mid") as names:
            mid = unet(z, t, cond).sample
        assert names and all(n.startswith("mid_block") for n in names)
        after = unet(z, t, cond).sample
    assert not torch.allclose(ref, mid, atol=1e-4)
    assert torch.equal(ref, after)  # processors restored
