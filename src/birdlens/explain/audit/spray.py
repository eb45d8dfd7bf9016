"""Spectral relevance analysis (SpRAy, Lapuschkin et al., Nat. Commun. 2019): cluster one class's maps.

Maps are downsampled to a small grid and L2-normalised; their cosine similarities, kept for each map's
nearest neighbours and symmetrised, form the affinity graph. The number of clusters is where the normalised
Laplacian's eigenvalues jump most (the eigengap), and the clusters come from sklearn's spectral clustering on
the same graph, so the count and the assignment use one graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Spray:
    """Clusters of one class's maps: ``labels[i]`` the cluster of map ``i``; ``eigenvalues`` ascending."""

    labels: np.ndarray
    k: int
    eigenvalues: np.ndarray
    features: np.ndarray  # [N, grid*grid] L2-normalised pooled maps

    def members(self, cluster: int) -> np.ndarray:
        return np.nonzero(self.labels == cluster)[0]

    def consistency(self, cluster: int) -> float:
        """Mean cosine similarity of the cluster's maps to their mean direction (1: all the same map)."""
        f = self.features[self.members(cluster)]
        centre = f.mean(0)
        centre = centre / (np.linalg.norm(centre) or 1.0)
        return float((f @ centre).mean())


def pooled_features(maps: torch.Tensor, grid: int = 8) -> np.ndarray:
    """``[N, grid*grid]``: the positive part of each map, average-pooled and L2-normalised (uniform if empty)."""
    pos = torch.nan_to_num(maps.detach().float(), nan=0.0).clamp_min(0)[:, None]
    f = F.adaptive_avg_pool2d(pos, grid).flatten(1)
    norm = f.norm(dim=1, keepdim=True)
    f = torch.where(norm > 0, f / norm.clamp_min(1e-12), torch.full_like(f, 1.0 / grid))
    return f.numpy().astype(np.float64)


def affinity(features: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Symmetric kNN graph of cosine similarities (the maps are non-negative, so weights are in [0, 1])."""
    sim = np.clip(features @ features.T, 0, 1)
    n = len(sim)
    k = min(n_neighbors, n - 1)
    a = np.zeros_like(sim)
    order = np.argsort(-sim, axis=1)
    for i in range(n):
        nb = [j for j in order[i] if j != i][:k]
        a[i, nb] = sim[i, nb]
    return np.maximum(a, a.T)


def laplacian_spectrum(a: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the normalised Laplacian ``I - D^-1/2 A D^-1/2``."""
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    lap = np.eye(len(a)) - inv[:, None] * a * inv[None, :]
    return np.sort(np.linalg.eigvalsh(lap))


def eigengap_k(eigenvalues: np.ndarray, max_k: int) -> int:
    """The cluster count ``k`` in ``1..max_k`` with the largest gap ``λ_k - λ_{k-1}`` (0-based eigenvalues)."""
    top = min(max_k, len(eigenvalues) - 1)
    if top < 2:
        return 1
    gaps = np.diff(eigenvalues[: top + 1])  # gaps[k-1] = λ_k - λ_{k-1}
    return int(np.argmax(gaps)) + 1


def spray(maps: torch.Tensor, grid: int = 8, max_k: int = 4, n_neighbors: int = 8, seed: int = 0) -> Spray:
    """Cluster ``maps [N, H, W]`` (SpRAy). Fewer than 6 maps: one cluster (too few to split)."""
    feats = pooled_features(maps, grid)
    n = len(feats)
    if n < 6:
        return Spray(np.zeros(n, dtype=int), 1, np.zeros(n), feats)
    a = affinity(feats, n_neighbors)
    eig = laplacian_spectrum(a)
    k = eigengap_k(eig, max_k)
    if k == 1:
        labels = np.zeros(n, dtype=int)
    else:
        from sklearn.cluster import SpectralClustering

        labels = SpectralClustering(
            n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr"
        ).fit_predict(a + 1e-9)
    return Spray(np.asarray(labels, dtype=int), k, eig, feats)
