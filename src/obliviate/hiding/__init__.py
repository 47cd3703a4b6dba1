"""Key-locked hiding: a public patch plus one key per concept (threat model and measurements: docs/hiding.md).

Two designs. ``lethe`` (the default, obliviate's): the public patch is a Lethe erasure of the concepts, a
robust removal of their capacity; each key is a LoRA on attn2 trained *afterwards* against it
(:mod:`.key_training`), so nothing in the patch was fitted to the keys. ``paper`` (Bui et al. 2025): the learnable
prompt trained jointly with the weight edit; red-teamed in docs/hiding.md (it re-routes the concepts instead
of removing them). Either way each key is a :class:`Key` bound to the public patch by its content hash; key
tensors never enter the patch.
"""

from __future__ import annotations

from ..lazy import lazy_attributes
from .config import DESIGNS, HideConfig, KeyTraining, PaperHideConfig, hide_config

_LAZY = {"Hidden": "hide", "bind_keys": "hide", "hide_concepts": "hide", "load_keys": "hide",
         "Key": "keys", "load_key": "keys", "unlocked": "keys", "check_key_width": "keys"}
__all__ = ["DESIGNS", "HideConfig", "KeyTraining", "PaperHideConfig", "hide_config", *_LAZY]
# the hiding machinery (torch) is imported on first use, so its configs serve the command line at once
__getattr__ = lazy_attributes(__name__, _LAZY)
