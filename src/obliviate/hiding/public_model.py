"""How a key recognises the public model it was made for when the public patch is not at hand.

A publisher releases the base model with the public patch merged in, never the patch itself: the merged
weights minus the patch are the base model, which holds every hidden concept. So a key must install on the
merged public model alone, and refuse any other model. The model fingerprint tells base models apart and may not
notice an edit (docs of :mod:`obliviate.fingerprint`), so a key carries the public patch's mark:
the entries the patch changed most, with their public value and the change. On the public model each entry
sits at its public value; on the base model it sits one change away. Rounding to half precision moves an entry
by less than half of a large change, so the test is which of the two each entry is nearer to. The mark holds a
few dozen numbers of the base model (public value minus change); it reveals nothing an attacker can use.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ObliviateError
from ..patch import Patch, patch_updates

ENTRIES = 64  # entries in a mark: a few dozen largest changes
AGREE = 0.75  # share of them that must sit nearer their public value than their base value


@dataclass(frozen=True)
class PublicMark:
    entries: tuple[tuple[str, int, float, float], ...]  # (component.parameter, flat index, public value, change)

    @classmethod
    def of(cls, base_pipe, patch: Patch) -> PublicMark:
        """The mark of ``patch`` on ``base_pipe`` (the base model, without the patch)."""
        updates = patch_updates(base_pipe, patch)
        pool = []
        for (component, name), delta in updates.items():
            flat = delta.reshape(-1).abs()
            k = min(ENTRIES, flat.numel())
            values, index = flat.topk(k)
            pool += [(float(v), f"{component}.{name}", int(i)) for v, i in zip(values, index, strict=True)]
        pool.sort(key=lambda item: -item[0])
        entries = []
        for _, full, i in pool[:ENTRIES]:
            component, name = full.split(".", 1)
            change = float(updates[(component, name)].reshape(-1)[i])
            base = float(getattr(base_pipe, component).get_parameter(name).detach().reshape(-1)[i])
            entries.append((full, i, base + change, change))
        return cls(tuple(entries))

    def found_in(self, pipe) -> bool:
        """Whether ``pipe`` holds the public model: most entries nearer their public value than their base one."""
        if not self.entries:
            return False
        near = 0
        for full, i, public, change in self.entries:
            component, name = full.split(".", 1)
            try:
                flat = getattr(pipe, component).get_parameter(name).detach().reshape(-1)
            except AttributeError:
                return False
            if i >= flat.numel():
                return False
            value = float(flat[i])
            near += abs(value - public) < abs(value - (public - change))
        return near >= AGREE * len(self.entries)

    def to_dict(self) -> dict:
        return {"entries": [list(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict) -> PublicMark:
        try:
            entries = tuple((str(n), int(i), float(p), float(c)) for n, i, p, c in data["entries"])
        except (TypeError, KeyError, ValueError):
            raise ObliviateError("not a public-model mark") from None
        return cls(entries)
