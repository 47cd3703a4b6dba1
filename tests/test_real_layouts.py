"""Every method, generation and evaluation on tiny random pipelines with the real SD 1.5, 2.1, SDXL and SD3
layouts and the schedulers those models ship (PNDM; Euler with velocity prediction; Euler; flow-matching Euler),
in float32 on the CPU (and bfloat16), and in float16 / bfloat16 on a CUDA GPU where one exists. These check that
the code runs unchanged on real layouts, not quality."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from tiny_sd import load_mmdit, make_tiny_flux, make_tiny_sd, make_tiny_sd3, make_tiny_sdxl

import obliviate
from obliviate.attacks import ATTACKS
from obliviate.attacks.configs import InversionAttackConfig
from obliviate.attention import attn2_names, joint_names
from obliviate.bench import Bench, Concept, Sampler
from obliviate.diffusion import image_size
from obliviate.families import denoiser

BENCH = Bench("tiny", [Concept("church", "object", ("a photo of the church", "church"),
                               implicit=("a photo of the chrch", "the church of the van")),
                       Concept("tench", "object", ("a photo of the tench",)),
                       Concept("van gogh", "style", ("a painting in the style of van gogh",), ("van gogh",))],
              images_per_concept=2, detector="clip", sampler=Sampler(steps=3, guidance=7.5))

FAST = {
    "fmn": {"steps": 2, "batch_size": 2, "n_images": 2},
    "redirect": {"steps": 2, "batch_size": 2, "n_images": 2, "redirect": "tench"},
    "esd-x": {"steps": 2, "batch_size": 1, "ddim_steps": 3},
    "esd-u": {"steps": 1, "batch_size": 1, "ddim_steps": 3},
    "uce": {},
    "rece": {"rounds": 2},
    "stereo": {"iterations": 2, "search_steps": 1, "inversion_steps": 1, "inversion_images": 2, "steps": 2,
               "batch_size": 1, "ddim_steps": 3},
    "advunlearn": {"steps": 2, "batch_size": 1, "ddim_steps": 3, "attack_steps": 1, "attack_tokens": 2},
    "prompt": {"steps": 2, "batch_size": 1, "ddim_steps": 3, "tokens": 2},
    "lethe": {"steps": 2, "batch_size": 1, "n_images": 2, "rounds": 1, "inversion_steps": 1, "adversary_steps": 1,
              "adversary_batch": 1, "keep_neighbours": 0.5, "neutral_rows": 1},
}


@dataclass
class QuickInversion(InversionAttackConfig):
    """The concept-inversion attack's defaults (150 steps on 32 images) cost minutes in bfloat16 on a CPU."""

    steps: int = 2
    anchors: int = 2


class BrightnessDetector:
    """A stand-in detector (no CLIP weights here): 'sees' a concept when the image is brighter than mid-grey."""

    def hits(self, images: np.ndarray, concept: Concept) -> np.ndarray:
        return images.reshape(len(images), -1).mean(1) > 127

    def features(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1)[:, :16].astype(np.float32)


_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]
# bfloat16 on the CPU once, on the harder layout (v-prediction, Euler): dtype bugs do not depend on the layout
# (the fast loop runs SD 1.5's layout; the full suite adds 2.1's, in float32 and in bfloat16, whose matmuls on a
# CPU cost seconds per test)
VARIANTS = [("1.5", "cpu", "float32"), pytest.param(("2.1", "cpu", "float32"), marks=pytest.mark.slow),
            pytest.param(("2.1", "cpu", "bfloat16"), marks=pytest.mark.slow),
            ("xl", "cpu", "float32"), pytest.param(("xl", "cpu", "bfloat16"), marks=pytest.mark.slow),
            pytest.param(("1.5", "cuda", "float16"), marks=_CUDA),
            pytest.param(("2.1", "cuda", "float16"), marks=_CUDA),
            pytest.param(("xl", "cuda", "float16"), marks=_CUDA), pytest.param(("xl", "cuda", "bfloat16"), marks=_CUDA),
            pytest.param(("sd3", "cpu", "float32"), marks=pytest.mark.slow),
            pytest.param(("sd3", "cpu", "bfloat16"), marks=pytest.mark.slow),
            pytest.param(("sd3", "cuda", "float16"), marks=_CUDA),
            pytest.param(("sd3", "cuda", "bfloat16"), marks=_CUDA),
            pytest.param(("flux", "cpu", "float32"), marks=pytest.mark.slow),
            pytest.param(("flux", "cpu", "bfloat16"), marks=pytest.mark.slow),
            pytest.param(("flux", "cuda", "bfloat16"), marks=_CUDA)]
# layers text enters through: SD's 6 down + 1 mid + 9 up attn2; SDXL's test layout 2 x 2 down + 2 mid + 3 x 2 up
# (depth 2); SD3's and Flux's test layouts one joint (double-stream) block
TEXT_ATTENTION_LAYERS = {"1.5": 16, "2.1": 16, "xl": 12, "sd3": 1, "flux": 1}
MAKERS = {"xl": make_tiny_sdxl, "sd3": make_tiny_sd3,
          "flux": lambda folder: make_tiny_flux(folder, guidance_embeds=True)}  # Flux-dev's guidance input
MMDIT = ("sd3", "flux")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    made = {}

    def folder(layout: str):
        if layout not in made:
            folder = tmp_path_factory.mktemp(f"sd{layout}")
            made[layout] = MAKERS[layout](folder) if layout in MAKERS else make_tiny_sd(folder, layout)
        return made[layout]

    return folder


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: "-".join(v))
def tiny(request, folders):
    layout, device, dtype = request.param
    pipe = load_mmdit(folders(layout), device=device, dtype=dtype) if layout in MMDIT else \
        obliviate.load_pipeline(str(folders(layout)), device=device, dtype=dtype)
    model = denoiser(pipe)
    assert model.dtype == getattr(torch, dtype) and model.device.type == device
    names = joint_names(model) if layout in MMDIT else attn2_names(model)
    assert len(names) == TEXT_ATTENTION_LAYERS[layout]
    pipe._layout = layout
    return pipe


def test_the_layouts_ship_their_real_schedulers(tiny):
    expected = {"1.5": "PNDMScheduler", "2.1": "EulerDiscreteScheduler", "xl": "EulerDiscreteScheduler",
                "sd3": "FlowMatchEulerDiscreteScheduler", "flux": "FlowMatchEulerDiscreteScheduler"}
    assert type(tiny.scheduler).__name__ == expected[tiny._layout]


@pytest.mark.parametrize("method", list(FAST))
def test_every_method_runs_and_its_patch_applies(tiny, method):
    def weights():
        return {f"{part}.{k}": v for part in ("unet", "transformer", "text_encoder", "text_encoder_2",
                                              "text_encoder_3") if getattr(tiny, part, None) is not None
                for k, v in getattr(tiny, part).state_dict().items()}

    before = {k: v.clone() for k, v in weights().items()}
    patch = obliviate.erase(tiny, "church", method, bench=BENCH, progress=False, **FAST[method])
    assert patch.tensors and patch.concepts == ["church"]
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in patch.tensors.values())
    assert all(torch.equal(before[k], v) for k, v in weights().items())  # the method wrote nothing
    with patch.applied(tiny):
        assert any(not torch.equal(before[k], v) for k, v in weights().items())
    assert all(torch.equal(before[k], v) for k, v in weights().items())
    images = obliviate.generate(tiny, "a photo of the church", n=2, patch=patch, bench=BENCH, progress=False)
    size = image_size(tiny)
    assert images.shape == (2, size, size, 3) and images.dtype == np.uint8


def test_uce_edits_every_projection_that_reads_text(tiny):
    patch = obliviate.erase(tiny, "church", "uce", bench=BENCH, preserve=("tench",), progress=False)
    if tiny._layout in MMDIT:  # the one text input projection and the pooled embedding's
        assert set(patch.tensors) == {"delta.transformer.context_embedder.weight",
                                      "delta.transformer.time_text_embed.text_embedder.linear_1.weight"}
        return
    pooled = {"delta.unet.add_embedding.linear_1.weight"} if tiny._layout == "xl" else set()  # SDXL's pooled path
    assert len(patch.tensors) == 2 * TEXT_ATTENTION_LAYERS[tiny._layout] + len(pooled)  # to_k, to_v of each one
    assert pooled <= set(patch.tensors)


@pytest.mark.parametrize("design, config", [
    ("lethe", {"steps": 2, "batch_size": 1, "n_images": 2, "rounds": 1, "inversion_steps": 1, "key_steps": 2,
               "key_batch_size": 1, "key_rank": 2, "weight_adversary_steps": 1, "weight_adversary_rank": 2,
               "weight_adversary_reset": 1}),
    ("paper", {"steps": 1, "batch_size": 1, "ddim_steps": 3, "tokens": 2})])
def test_hide_generate_with_key_and_evaluate(tiny, tmp_path, monkeypatch, design, config):
    quick = dataclasses.replace(ATTACKS["inversion"], config=QuickInversion)
    monkeypatch.setitem(ATTACKS, "inversion", quick)  # the eval runs it: not quality
    hidden = obliviate.hide(tiny, ["church"], design=design, bench=BENCH, progress=False, **config)
    paths = hidden.save(tmp_path / "public.safetensors", tmp_path / "keys")
    images = obliviate.generate(tiny, "a photo of the church", n=2, patch=tmp_path / "public.safetensors",
                                keys=[paths["church"]], bench=BENCH, progress=False)
    assert images.shape == (2, image_size(tiny), image_size(tiny), 3)
    result = obliviate.evaluate(tiny, patch=hidden.patch, keys=list(hidden.keys.values()), bench=BENCH,
                                detector=BrightnessDetector(), inversion=True, cache=False, progress=False)
    assert result.targets == ["church"] and result.keys == ["church"]
    assert result.model.dtype == str(denoiser(tiny).dtype).removeprefix("torch.")
    assert result.inversion is not None and set(result.inversion) == {"church"}
    assert result.sampler == {"steps": 3, "guidance": 7.5}


def _dtype_free(tiny) -> None:
    """What a test checks does not depend on the dtype: once per layout (float32) is enough; bfloat16 matmuls
    on a CPU cost seconds each."""
    if denoiser(tiny).dtype == torch.bfloat16:
        pytest.skip("dtype-independent: checked in float32")


def test_fmn_with_inversion_tokens_and_lora(tiny):
    _dtype_free(tiny)
    patch = obliviate.erase(tiny, "church", "fmn", bench=BENCH, steps=1, batch_size=2, n_images=2,
                            inversion_tokens=2, inversion_steps=1, trainable="lora", rank=2, progress=False)
    assert any(k.startswith("lora_down.") for k in patch.tensors)


@pytest.mark.parametrize("name, config", [("inversion", {"steps": 1, "n_tokens": 2, "anchors": 2}),
                                          ("unlearndiff", {"steps": 2, "n_tokens": 2, "anchors": 2}),
                                          ("p4d", {"steps": 2, "n_tokens": 2, "anchors": 2, "points": 4}),
                                          ("ringabell", {"steps": 2, "n_tokens": 3, "population": 8}),
                                          ("implicit", {}), ("completion", {"anchors": 2}),
                                          ("memory", {"steps": 2, "tokens": 2, "anchors": 2, "check_every": 1,
                                                      "batch_size": 1}),
                                          ("memory", {"steps": 2, "form": "lora", "rank": 2, "anchors": 2,
                                                      "check_every": 1, "batch_size": 1}),
                                          ("relearn", {"steps": 2, "form": "cross-attention", "anchors": 2,
                                                       "check_every": 1, "batch_size": 1})])
def test_every_attack_runs(tiny, name, config):
    patch = obliviate.erase(tiny, "church", "uce", bench=BENCH, progress=False)
    r = obliviate.attack(tiny, "church", name, patch=patch, bench=BENCH, detector=BrightnessDetector(), n_images=2,
                         progress=False, **config)
    assert r.attack == name and 0 <= r.asr <= 1 and r.asr_base is not None
    if r.prompts is not None:  # text attacks end with prompts anyone can type into the real tokenizer
        assert all(len(tiny.tokenizer(p).input_ids) <= tiny.tokenizer.model_max_length for p in r.prompts)


def test_attacks_learn_from_the_base_models_images(tiny, monkeypatch):
    """On a real model the concept's images are generated: by the base model, never the edited one."""
    from obliviate.catalog import BenchCatalog

    _dtype_free(tiny)
    applied_while_generating = []
    real = BenchCatalog.images

    def spy(self, pipe, concept, n, seed):
        applied_while_generating.append(len(getattr(pipe, "_obliviate_applied", [])))
        return real(self, pipe, concept, n, seed)

    monkeypatch.setattr(BenchCatalog, "images", spy)
    patch = obliviate.erase(tiny, "church", "uce", bench=BENCH, progress=False)
    obliviate.attack(tiny, "church", ["completion", "inversion"], patch=patch, bench=BENCH, n_images=2,
                     detector=BrightnessDetector(), anchors=2, steps=1, n_tokens=2, progress=False)
    assert applied_while_generating == [0, 0]
