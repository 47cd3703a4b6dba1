"""The SD3 family on a tiny random layout in the shape of diffusers' own SD3 test components: the conditioning is
the pipeline's own (two CLIPs and T5, or T5's zeros), the flow-matching terms are the path the model is trained
on and the sampler's own Euler steps, the joint attention processor is diffusers' when it only watches, a word is
found in CLIP's and T5's tokens, patches of another family are refused in one line, and a LoRA patch loads with
diffusers' own SD3 loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_sd import check_lora_round_trip, load_mmdit, make_tiny_sd3

import obliviate
from obliviate.attention import AttnCall, PromptMemory, joint_names, joint_processors
from obliviate.bench import Bench, Concept, Sampler
from obliviate.diffusion import (
    FlowMatching,
    Predict,
    denoising_to,
    partial_sample,
    partial_sampler,
    predicted_x0,
    random_timesteps,
    timestep_range,
    training_scheduler,
    training_target,
)
from obliviate.errors import ObliviateError
from obliviate.families import encode, family_of, predict, segments
from obliviate.terms import token_positions

BENCH = Bench("tiny", [Concept("church", "object", ("a photo of the church", "church")),
                       Concept("tench", "object", ("a photo of the tench",))],
              images_per_concept=2, detector="clip", sampler=Sampler(steps=3, guidance=7.5))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="module")
def sd3(folder):
    return load_mmdit(folder)


def test_the_conditioning_is_the_pipelines_own(sd3):
    prompts = ["a photo of the church", "A Dog in the style of van gogh", ""]
    cond = encode(sd3, prompts)
    states, negative, pooled, negative_pooled = sd3.encode_prompt(prompts, None, None, device="cpu",
                                                                 do_classifier_free_guidance=True,
                                                                 negative_prompt=[""] * 3)
    assert family_of(sd3).key == "sd3" and cond.states.shape == (3, 77 + 256, 32)  # CLIP's, then T5's
    torch.testing.assert_close(cond.states, states)  # T5 reads the prompt itself (its case included)
    torch.testing.assert_close(cond.pooled, pooled)  # both CLIPs' projections side by side: 64
    torch.testing.assert_close(cond[2:].states, negative[:1])  # SD3 encodes the empty prompt as any other


def test_without_t5_the_conditioning_has_t5s_zeros(folder):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)  # as users run it
    cond = encode(pipe, ["a photo of the church"])
    states, _, pooled, _ = pipe.encode_prompt(["a photo of the church"], None, None, device="cpu",
                                              do_classifier_free_guidance=False)
    torch.testing.assert_close(cond.states, states)
    assert not cond.states[:, 77:].any() and [s.tokenizer for s in segments(pipe)][1] is None
    patch = obliviate.erase(pipe, "church", "uce", bench=BENCH, progress=False)
    assert "delta.transformer.context_embedder.weight" in patch.tensors


def test_a_word_is_found_in_clips_tokens_and_t5s(sd3):
    mask = token_positions(sd3, ["a photo of the church"], ["church"])
    clip, t5 = segments(sd3)
    assert mask.shape == (1, 77 + 256)
    assert mask[0, :77].nonzero().flatten().tolist() == [5]  # start token, a, photo, of, the, church
    assert mask[0, 77:].nonzero().flatten().tolist() == [4]  # T5: no start token
    assert t5.start == 77 and type(t5.tokenizer).__name__.startswith("T5")


def test_flow_matching_is_the_straight_path_and_the_samplers_euler_step(sd3):
    sched = training_scheduler(sd3)
    assert isinstance(sched, FlowMatching)
    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 4, 32, 32, generator=gen), torch.randn(3, 4, 32, 32, generator=gen)
    assert timestep_range(sched) == (1, 1000)  # sigma = t / 1000 > 0: at sigma = 0 no output denoises anything
    drawn = random_timesteps(sched, 5000, torch.Generator().manual_seed(0), "cpu")
    assert drawn.min() >= 1 and drawn.max() <= 1000
    t = torch.tensor([1, 500, 1000])
    x_t = sched.add_noise(z0, noise, t)
    torch.testing.assert_close(x_t[1], 0.5 * z0[1] + 0.5 * noise[1])
    torch.testing.assert_close(x_t[2], noise[2])
    target = training_target(sched, z0, noise, t)
    torch.testing.assert_close(target, noise - z0)
    torch.testing.assert_close(predicted_x0(sched, target, x_t, t), z0, atol=1e-5, rtol=0)
    torch.testing.assert_close(denoising_to(sched, z0, x_t, t), target, atol=1e-3, rtol=0)  # 1/sigma at t = 1

    # two of our partial-sampler steps are the pipeline's own scheduler's (its shift of 3 included)
    sampler = partial_sampler(sd3, 4)
    assert sampler.config.shift == 3.0
    cond = encode(sd3, ["", "a photo of the church"])
    model_predict: Predict = lambda x, t, c: predict(sd3, x, t, c)  # noqa: E731
    x, t_reached = partial_sample(model_predict, sampler, noise[:1], cond[1:], cond[:1], 2, guidance=2.0)
    ref = type(sd3.scheduler).from_config(sd3.scheduler.config)
    ref.set_timesteps(4)
    y = noise[:1]
    for step in ref.timesteps[:2]:
        out = predict(sd3, torch.cat([y, y]), step.expand(2), cond)
        y = ref.step(out[:1] + 2.0 * (out[1:] - out[:1]), step, y).prev_sample
    torch.testing.assert_close(x, y)
    assert t_reached.tolist() == [ref.timesteps[2].item()]


def test_the_joint_processor_is_diffusers_own_until_it_captures_or_remembers(sd3):
    model = sd3.transformer
    cond = encode(sd3, ["a photo of the church", "the church in the style of van gogh"])
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700, 300])
    with torch.no_grad():
        ref = predict(sd3, x, t, cond)
        with joint_processors(model) as names:
            call = AttnCall(token_mask=token_positions(sd3, ["a photo of the church",
                                                             "the church in the style of van gogh"], ["church"]))
            watched = predict(sd3, x, t, cond, attention=call)
            gen = torch.Generator().manual_seed(2)
            memory = PromptMemory(torch.randn(3, 32, generator=gen) * 10, torch.randn(3, 32, generator=gen) * 10)
            remembered = predict(sd3, x, t, cond, attention=AttnCall(memory=memory))
    assert names == joint_names(model) and len(names) == 1
    torch.testing.assert_close(watched, ref, atol=1e-5, rtol=0)
    assert call.collected().numel() == 2 * 2 * 4 * 32 * 32  # 2 prompts x (CLIP + T5 position) x 4 heads x queries
    assert (remembered - ref).abs().max() > 1e-2
    assert type(model.attn_processors[names[0]]).__name__ == "JointAttnProcessor2_0"  # restored


def test_a_patch_of_one_family_is_refused_on_the_other(sd3):
    sd = obliviate.load_pipeline("world")
    on_sd3 = obliviate.erase(sd3, "church", "uce", bench=BENCH, progress=False)
    assert on_sd3.metadata["family"] == "sd3"
    with pytest.raises(ObliviateError, match="made for a Stable Diffusion 3 model; this is a Stable Diffusion "
                                             "1.x / 2.x pipeline"):
        obliviate.generate(sd, "a red circle", n=1, patch=on_sd3, progress=False)
    on_sd = obliviate.erase(sd, "circle", "uce", progress=False)
    with pytest.raises(ObliviateError, match=r"this is a Stable Diffusion 3 pipeline \(StableDiffusion3Pipeline\)"):
        on_sd.apply(sd3, force=True)


def test_a_lora_patch_on_the_text_stream_loads_with_diffusers(sd3, folder, tmp_path):
    check_lora_round_trip(sd3, load_mmdit(folder),
                          [("transformer", "transformer_blocks.0.attn.add_k_proj"),
                           ("transformer", "transformer_blocks.0.attn.add_v_proj"),
                           ("text_encoder", "text_model.encoder.layers.1.self_attn.q_proj")], BENCH, tmp_path)

def test_the_text_stream_is_what_attn2_names(sd3):
    from obliviate.families import trainable_names

    kv = trainable_names(sd3, "attn2-kv")
    assert kv and all(".attn.add_k_proj." in n or ".attn.add_v_proj." in n for n in kv)
    stream = set(trainable_names(sd3, "attn2"))
    assert stream.isdisjoint(trainable_names(sd3, "non-attn2"))
    assert all(".attn.add_" in n or ".attn.to_add_out." in n for n in stream)
    with pytest.raises(ObliviateError, match="does not name parameters"):
        trainable_names(sd3, "text-encoder")


def test_the_patch_direction_attack_reads_the_text_streams_keys_and_values(sd3):
    """On an MMDiT a key's memory is read by ``add_k_proj``/``add_v_proj``: the attack takes its directions there
    (their biases and every other tensor left out), as wide as the text stream a memory lives in."""
    from obliviate.attacks.directions import DirectionAttackConfig, direction_memories
    from obliviate.families import text_width, trainable_names
    from obliviate.patch import Patch

    gen = torch.Generator().manual_seed(0)
    model = sd3.transformer
    names = trainable_names(sd3, "attn2-kv") + ["transformer_blocks.0.attn.add_q_proj.weight"]
    tensors = {f"delta.transformer.{n}": torch.randn(model.get_parameter(n).shape, generator=gen) for n in names}
    memories = direction_memories(sd3, Patch(tensors, {}), DirectionAttackConfig(rank=4, tries=3))
    assert len(memories) == 3 and all(m.keys.shape[-1] == text_width(sd3) for m in memories)
    query_only = Patch({k: v for k, v in tensors.items() if "add_q_proj" in k}, {})
    with pytest.raises(ObliviateError, match="no text key or value projection"):
        direction_memories(sd3, query_only, DirectionAttackConfig())


def test_the_fingerprint_covers_t5_and_a_merged_model_draws_what_the_patch_does(sd3, folder, tmp_path):
    from obliviate.fingerprint import fingerprint

    patch = obliviate.erase(sd3, "church", "uce", bench=BENCH, progress=False)
    patched = obliviate.generate(sd3, "a photo of the church", n=2, patch=patch, bench=BENCH, progress=False)
    out = obliviate.save_merged(load_mmdit(folder), [patch], tmp_path / "merged")
    merged = load_mmdit(out)
    assert np.array_equal(obliviate.generate(merged, "a photo of the church", n=2, bench=BENCH, progress=False),
                          patched)
    before = fingerprint(merged)
    with torch.no_grad():
        merged.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight.add_(0.5)
    assert not fingerprint(merged).matches(before)


def test_a_learned_token_has_a_row_in_both_clips_and_t5(sd3):
    from obliviate.inversion import InversionConfig, LearnedTokens, installed, invert, row_width

    assert row_width(sd3) == 32 + 32 + 32 and row_width(sd3, own=False) == 64
    rows = torch.randn(1, 96) * 3
    plain = encode(sd3, ["a photo of the church"]).states
    with installed(sd3, LearnedTokens(["<t0>"], rows)) as phrase:
        t5_id = sd3.tokenizer_3.convert_tokens_to_ids("<t0>")
        assert t5_id != sd3.tokenizer_3.unk_token_id
        assert sd3.text_encoder_3.get_input_embeddings().weight[t5_id].tolist() == rows[0, 64:].tolist()
        learned = encode(sd3, [f"a photo of the {phrase}"]).states
    assert (learned[:, :77] - plain[:, :77]).abs().max() > 0 and (learned[:, 77:] - plain[:, 77:]).abs().max() > 0
    found = invert(sd3, np.zeros((2, 16, 16, 3), np.uint8), InversionConfig(n_tokens=2, steps=1, batch_size=1,
                                                                             progress=False), ["church"])
    assert found.embeddings.shape == (2, 96)
    with installed(sd3, LearnedTokens(["<t1>"], torch.randn(1, 64))) as phrase:  # CLIP rows only: T5 spells it
        assert "<t1>" not in sd3.tokenizer_3.get_vocab() and encode(sd3, [f"a {phrase}"]).states.isfinite().all()
