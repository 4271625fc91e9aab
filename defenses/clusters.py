"""Overlap-preserving smoothing sets: partition the neighbour graph into bounded clusters.

The radius of substitution smoothing (:class:`defenses.smoothing.SmoothingSets`) is small only
when a word and all its substitutes share their smoothing set: ``q_w = 1`` exactly when
``T_w' = T_w`` for every ``w'`` in the attack set ``S_w``. The published construction (a word's
100 most similar members of its connected component) gives neighbouring words different sets in
large components, so ``q_w < 1`` almost everywhere and long documents get ``Delta_d`` near 1.

Here the symmetric neighbour graph of the threat on a vocabulary (an edge ``u - v`` when ``v`` is
a single-word neighbour of ``u`` or ``u`` of ``v``; nodes are the vocabulary and its neighbours)
is partitioned into clusters of at most ``max_size`` words, and every member's smoothing set is
its cluster (given to :class:`SmoothingSets` as an explicit table, its ``sets=`` hook). A word is
*clean* when all its edges stay inside its cluster: then ``q_w = 1`` and it costs nothing in the
radius. Edges that cross clusters keep ``q < 1`` (here ``q = 0``: disjoint sets), since ``q`` is
still computed from the threat model as given, so certificates stay sound whatever the clusters.

Construction (:func:`cluster_partition`, seeded greedy agglomeration with a size cap): words are
visited by decreasing weight (occurrences in the texts, so frequent words are made clean first;
ties in a seeded random order); a word's cluster is merged with the clusters of all its
neighbours when the union has at most ``max_size`` words (union-find), else the word is left
for now. Optionally a second pass merges remaining edges (heaviest first) while clusters fit.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from attacks.text import tokenize
from attacks.threat import ThreatModel

from .smoothing import SmoothingSets, stable_hash

__all__ = ["neighbour_graph", "cluster_partition", "cluster_sets", "ClusterStats",
           "cluster_stats", "radius_table", "cluster_noise_transform"]

_SINGLE_WORD = re.compile(r"\w+", re.UNICODE)


def _vocab_counts(texts: Iterable[str]) -> Counter:
    c: Counter = Counter()
    for t in texts:
        c.update(w.lower() for w in tokenize(t).words)
    return c


def neighbour_graph(threat: ThreatModel, vocab: Iterable[str]) -> dict[str, set[str]]:
    """Symmetric adjacency ``word -> set of words`` of the threat on ``vocab`` (lower-case).

    Edges ``u - v`` for every vocabulary word ``u`` and single-word neighbour ``v`` of it (both
    directions); multi-word neighbours are left out (they give ``q = 0`` whatever the sets).
    Nodes: the vocabulary words with neighbours and their neighbours.
    """
    if not isinstance(threat, ThreatModel):
        raise TypeError(f"threat must be a ThreatModel, got {type(threat).__name__}")
    adj: dict[str, set[str]] = {}
    for u in sorted({w.lower() for w in vocab}):
        for v in threat.neighbours(u):
            v = v.lower()
            if v == u or not _SINGLE_WORD.fullmatch(v):
                continue
            adj.setdefault(u, set()).add(v)
            adj.setdefault(v, set()).add(u)
    return adj


class _UnionFind:
    def __init__(self, nodes):
        self.parent = {x: x for x in nodes}
        self.size = {x: 1 for x in nodes}

    def find(self, x):
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union_all(self, roots):
        roots = sorted(roots, key=lambda r: (-self.size[r], r))
        big = roots[0]
        for r in roots[1:]:
            self.parent[r] = big
            self.size[big] += self.size[r]
        return big


def cluster_partition(graph: Mapping[str, Iterable[str]], max_size: int = 100, seed: int = 0,
                      weights: Mapping[str, float] | None = None, fill: bool = False
                      ) -> dict[str, tuple[str, ...]]:
    """Partition the nodes of ``graph`` (symmetric adjacency) into clusters of <= ``max_size``.

    Returns ``word -> its cluster`` (sorted tuple, containing the word) for every node.
    ``weights`` (default 1 per node): visit order, heaviest first; ties in the order of a seeded
    permutation (``seed``, stable across processes). ``fill=True`` adds the second pass (module
    docstring). Deterministic for a given (graph, max_size, seed, weights, fill).
    """
    if isinstance(max_size, bool) or int(max_size) != max_size or max_size < 1:
        raise ValueError(f"max_size must be a positive integer, got {max_size!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    max_size = int(max_size)
    nodes = sorted(graph)
    w = weights or {}
    tie = {x: stable_hash(f"{seed}:{x}") for x in nodes}
    order = sorted(nodes, key=lambda x: (-float(w.get(x, 1.0)), tie[x]))
    uf = _UnionFind(nodes)
    for u in order:
        roots = {uf.find(u)} | {uf.find(v) for v in graph[u]}
        if len(roots) > 1 and sum(uf.size[r] for r in roots) <= max_size:
            uf.union_all(roots)
    if fill:
        edges = sorted({(a, b) if a < b else (b, a) for a in nodes for b in graph[a]},
                       key=lambda e: (-(float(w.get(e[0], 1.0)) + float(w.get(e[1], 1.0))),
                                      tie[e[0]] ^ tie[e[1]], e))
        for a, b in edges:
            ra, rb = uf.find(a), uf.find(b)
            if ra != rb and uf.size[ra] + uf.size[rb] <= max_size:
                uf.union_all({ra, rb})
    members: dict[str, list[str]] = {}
    for x in nodes:
        members.setdefault(uf.find(x), []).append(x)
    out = {}
    for ms in members.values():
        t = tuple(sorted(ms))
        for x in ms:
            out[x] = t
    return out


def cluster_sets(threat: ThreatModel, texts: Sequence[str] | None = None,
                 vocab: Iterable[str] | None = None, max_size: int = 100, seed: int = 0,
                 fill: bool = False) -> SmoothingSets:
    """Clustered smoothing sets for ``threat`` on the vocabulary of ``texts`` (or ``vocab``).

    Every node of :func:`neighbour_graph` gets its cluster of :func:`cluster_partition` as its
    smoothing set (weights: occurrences in ``texts``, so frequent words are made clean first).
    Returns a :class:`SmoothingSets` over ``threat`` (``q`` and radii against the threat as given)
    with the explicit table; its ``.cluster_info`` holds the parameters and
    :func:`cluster_stats` of the partition.
    """
    if texts is None and vocab is None:
        raise ValueError("give texts (the collection's documents) or vocab (its words)")
    counts = _vocab_counts(texts) if texts is not None else Counter()
    words = set(counts) | {x.lower() for x in (vocab or ())}
    graph = neighbour_graph(threat, words)
    part = cluster_partition(graph, max_size=max_size, seed=seed, weights=counts, fill=fill)
    table = {x: [y for y in c if y != x] for x, c in part.items() if len(c) > 1}
    sets = SmoothingSets(threat, max_set_size=max_size, sets=table)
    sets.cluster_info = {"construction": "clusters", "max_size": int(max_size), "seed": int(seed),
                         "fill": bool(fill),
                         **asdict(cluster_stats(graph, part, counts))}
    return sets


@dataclass(frozen=True)
class ClusterStats:
    """How much of the attack graph a partition keeps inside clusters.

    ``edge_share``: share of (undirected) graph edges inside a cluster; ``clean_share``: share of
    vocabulary words with neighbours whose edges all stay inside (``q = 1``);
    ``clean_token_share``: the same weighted by occurrences (``nan`` without counts).
    """

    n_nodes: int
    n_edges: int
    edges_inside: int
    edge_share: float
    n_clusters: int
    max_cluster: int
    clean_share: float
    clean_token_share: float


def cluster_stats(graph: Mapping[str, Iterable[str]], part: Mapping[str, Sequence[str]],
                  counts: Mapping[str, int] | None = None) -> ClusterStats:
    """:class:`ClusterStats` of partition ``part`` (word -> cluster) on ``graph``."""
    cid = {x: part.get(x, (x,)) for x in graph}
    edges = {(a, b) for a in graph for b in graph[a] if a < b}
    inside = sum(cid.get(a) == cid.get(b) for a, b in edges)
    counts = counts or {}
    vocab = [x for x in graph if counts.get(x, 0) > 0] if counts else list(graph)
    clean = [all(cid.get(v) == cid.get(x) for v in graph[x]) for x in vocab]
    tot = sum(counts.get(x, 0) for x in vocab)
    tok = (sum(counts.get(x, 0) for x, c in zip(vocab, clean) if c) / tot) if tot else float("nan")
    sizes = Counter(part.values())
    multi = {k: s for k, s in sizes.items() if s > 1}
    return ClusterStats(n_nodes=len(graph), n_edges=len(edges), edges_inside=int(inside),
                        edge_share=inside / len(edges) if edges else float("nan"),
                        n_clusters=len(multi), max_cluster=max(sizes.values()) if sizes else 0,
                        clean_share=float(np.mean(clean)) if clean else float("nan"),
                        clean_token_share=float(tok))


def radius_table(texts: Sequence[str], sets: Mapping[str, SmoothingSets], R: int | None = None,
                 r_share: float | None = None,
                 quantiles: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)) -> pd.DataFrame:
    """Radius distributions of ``texts`` under several smoothing-set constructions.

    One row per construction (``sets``: name -> :class:`SmoothingSets`): quantiles of
    ``Delta_d``, its mean, the share of documents with ``Delta_d = 0`` and ``< 0.5``, and the
    share of word occurrences with ``q = 1`` among attackable ones. Budget: ``R`` words, or
    ``r_share`` of each document's words (``floor``), or every word.
    """
    rows = []
    for name, s in sets.items():
        deltas, q1, att = [], 0, 0
        for t in texts:
            qs = s.q_values(t)
            if r_share is not None:
                r = int(np.floor(r_share * len(qs) + 1e-9))
            else:
                r = R
            deltas.append(s.radius(t, r))
            words = tokenize(t).words
            a = np.array([len(s.attack_set(x)) > 1 for x in words], dtype=bool)
            att += int(a.sum())
            q1 += int((qs[a] >= 1.0).sum()) if len(a) else 0
        d = np.array(deltas)
        row = {"sets": name, **{f"q{int(100 * p)}": float(np.quantile(d, p)) for p in quantiles},
               "mean": float(d.mean()), "share_zero": float(np.mean(d == 0)),
               "share_below_0.5": float(np.mean(d < 0.5)),
               "q1_share_attackable": q1 / att if att else float("nan")}
        rows.append(row)
    return pd.DataFrame(rows)


def cluster_noise_transform(threat, texts: Sequence[str], max_size: int = 100, seed: int = 0,
                            fresh_per_epoch: bool = False, fill: bool = False):
    """Matched noisy training with cluster substitution: :func:`defenses.smoothing.noise_transform`
    over :func:`cluster_sets` built on ``texts`` (the training collection's documents), so every
    training copy is a draw of the clustered smoother. ``threat``: a ThreatModel or a spec for
    :func:`attacks.threat.load_threat_model`. The transform's ``.describe()`` adds the cluster
    parameters."""
    from attacks.threat import load_threat_model

    from .smoothing import noise_transform

    sets = cluster_sets(load_threat_model(threat), texts=texts, max_size=max_size, seed=seed,
                        fill=fill)
    tf = noise_transform(sets, fresh_per_epoch=fresh_per_epoch, seed=seed)
    base = tf.describe
    tf.describe = lambda: {**base(), "sets": "clustered", "max_size": int(max_size),
                           "fill": bool(fill)}
    return tf
