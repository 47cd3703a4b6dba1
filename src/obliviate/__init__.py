"""obliviate: make text-to-image diffusion models forget or hide concepts, and measure what happened.

The API works on plain diffusers pipelines, on any device and dtype::

    import obliviate
    pipe = obliviate.load_pipeline("world")              # or your own StableDiffusionPipeline
    patch = obliviate.erase(pipe, "zorvik", method="uce")
    result = obliviate.evaluate(pipe, patch=patch, concepts=["zorvik", "maelin"])
    patch.save("uce-zorvik.safetensors")

Names are imported on first use, so ``import obliviate`` stays quick.
"""

from __future__ import annotations

from .lazy import lazy_attributes

__version__ = "0.2.0"

_EXPORTS = {
    "load_pipeline": "api", "erase": "api", "hide": "api", "generate": "api", "evaluate": "api", "attack": "api",
    "chance_floor": "api", "save_merged": "pipeline", "under_test": "under_test", "ModelUnderTest": "under_test",
    "ATTACKS": "attacks",
    "Patch": "patch", "AppliedPatch": "patch", "Key": "hiding.keys", "load_key": "hiding.keys", "Hidden": "hiding",
    "EvalResult": "eval.result", "ObliviateError": "errors", "Fingerprint": "fingerprint",
    "METHODS": "methods", "catalog_for": "catalog", "load_bench": "bench",
    "sign_file": "signing", "verify_file": "signing", "new_identity": "signing",
    "build_oracle": "world.oracle", "find_oracle": "world.oracle",
}

__all__ = ["__version__", *_EXPORTS]
__getattr__ = lazy_attributes(__name__, _EXPORTS)
