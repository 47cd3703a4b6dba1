"""Pure metric functions: erasure efficacy, preservation, harmonic mean, and feature drift."""

from __future__ import annotations

import numpy as np


def efficacy(m_base: float, m_edit: float) -> float | None:
    """E = 1 - M_edit / M_base, clipped to [0, 1]; undefined when the base model cannot draw the concept."""
    if m_base <= 0:
        return None
    return float(np.clip(1.0 - m_edit / m_base, 0.0, 1.0))


def _kept(m_base: float, m_edit: float) -> float | None:
    """How much of a concept an edit kept, min(1, M_edit / M_base); undefined where the base cannot draw it."""
    return min(1.0, m_edit / m_base) if m_base > 0 else None


def preservation(pairs: list[tuple[float, float]]) -> float | None:
    """P = mean over (m_base, m_edit) of min(1, M_edit / M_base), over concepts the base model can draw."""
    ratios = [r for b, e in pairs if (r := _kept(b, e)) is not None]
    return float(np.mean(ratios)) if ratios else None


def worst_preserved(named: list[tuple[str, float, float]]) -> dict | None:
    """The kept concept that lost the most, over (name, m_base, m_edit): {"concept", "preservation"}, with
    preservation's min(1, M_edit / M_base). A mean over many concepts hides one that is half gone."""
    ratios = [(r, name) for name, b, e in named if (r := _kept(b, e)) is not None]
    if not ratios:
        return None
    ratio, name = min(ratios)
    return {"concept": name, "preservation": float(ratio)}


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 0.0 if a + b == 0 else float(2 * a * b / (a + b))


def _sqrtm_psd(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula, on our features)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.cov(a, rowvar=False) + 1e-6 * np.eye(a.shape[1])
    cov_b = np.cov(b, rowvar=False) + 1e-6 * np.eye(b.shape[1])
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)))


def mean_feature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean L2 distance between paired features (same prompt, same seed)."""
    return float(np.linalg.norm(a - b, axis=1).mean())


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a detection rate measured on ``n`` images (sound near 0 and 1)."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denom
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return (round(float(max(0.0, centre - half)), 4), round(float(min(1.0, centre + half)), 4))
