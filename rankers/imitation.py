"""Surrogates by imitation: train a differentiable cross-encoder to reproduce a victim's order.

The attacker ranks its own queries' first-stage candidates with the victim *through an Oracle*
(every scored pair is a counted victim query), samples training pairs from the victim's order and
fine-tunes a cross-encoder with the lab's training loop (:mod:`rankers.training`).

Sampling recipes (ranks 1-based, in the victim's order)
-------------------------------------------------------
``topk_all_pairs``   every ordered pair ``(d_i, d_j)``, ``i < j <= k`` of the victim's top-k
                     (``k`` defaults to 29: 406 pairs per query).
``top25_plus_tail``  all pairs within the top ``k`` (25) plus, for each top-k document, ``tail``
                     (4) random documents from below rank ``k``.
``pseudo_relevance`` the top ``k`` (5) documents are positives; each gets ``tail`` (4) random
                     negatives from below rank ``2k`` (from below ``k`` when the list is short).

Each pair becomes a group ``[better, worse]`` (a positive with ``tail`` negatives for
``pseudo_relevance``). Losses: ``hinge`` (margin 1), ``ranknet`` (label-smoothed RankNet, the
default) or ``listwise``.

Agreement (:func:`agreement`): overlap@10 (``|top10(victim) & top10(surrogate)| / 10``) and
rank-biased overlap (:func:`rbo`, ``p = 0.7``), averaged over queries.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .base import Ranker
from .oracle import Oracle

RECIPES = ("topk_all_pairs", "top25_plus_tail", "pseudo_relevance")

#: :func:`train_surrogate`'s defaults per surrogate family: ``glove`` (``base="glove"``, the
#: bag-of-embeddings bi-encoder of :mod:`rankers.bow`) and ``cross-encoder`` (any other base).
#: ``queries`` is the attacker's query count the attack job and the benches use. Sized for a
#: 2-core CPU; the glove values were chosen on Cranfield (bench/trigger.py, closing note of #12).
IMITATION_DEFAULTS = {
    "cross-encoder": dict(queries=20, candidates_k=30, k=6, tail=3, max_pairs=640, lr=3e-4,
                          epochs=1, batch_size=16, max_length=128, eval_every=10, patience=2),
    "glove": dict(queries=100, candidates_k=100, k=25, tail=4, max_pairs=100_000, lr=1e-2,
                  epochs=5, batch_size=64, max_length=256, eval_every=50, patience=3),
}


def imitation_defaults(base: str) -> dict:
    """The :data:`IMITATION_DEFAULTS` entry of the family of ``base`` (a copy)."""
    return dict(IMITATION_DEFAULTS["glove" if str(base) == "glove" else "cross-encoder"])


# ------------------------------------------------------------------------------ rank overlap

def rbo(a: Sequence, b: Sequence, p: float = 0.7, extrapolated: bool = True) -> float:
    """Rank-biased overlap of two rankings (best first), in [0, 1].

    With ``A_d = |a[:d] & b[:d]| / d`` and depth ``k = min(len(a), len(b))`` (longer list cut):

    * ``extrapolated=True`` (default, Webber et al. 2010, eq. 32):
      ``RBO_ext = A_k * p^k + (1 - p) * sum_{d=1..k} A_d * p^(d-1)``; equals 1 for identical
      lists.
    * ``extrapolated=False``: the lower bound ``(1 - p) * sum_{d=1..k} A_d * p^(d-1)``.

    ``p`` in (0, 1): smaller ``p`` weighs the top more (p = 0.7 puts ~97% of the weight on the
    top 10). Two empty lists give 1.0.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    k = min(len(a), len(b))
    if k == 0:
        return 1.0 if len(a) == len(b) else 0.0
    seen_a, seen_b, overlap, total = set(), set(), 0, 0.0
    agree = 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        agree = overlap / d
        total += agree * p ** (d - 1)
    lower = (1 - p) * total
    return float(lower + agree * p ** k) if extrapolated else float(lower)


def overlap_at(a: Sequence, b: Sequence, k: int = 10) -> float:
    """``|a[:k] & b[:k]| / k`` (divides by ``min(k, len)`` when the lists are shorter)."""
    n = min(k, len(a), len(b))
    return 0.0 if n == 0 else len(set(a[:k]) & set(b[:k])) / n


# ------------------------------------------------------------------------------ pair sampling

def sample_groups(ranked_docs: Sequence[str], query: str, recipe: str, k: int, tail: int,
                  rng: np.random.Generator, n_known: int | None = None) -> list:
    """Training groups for one query from the victim's ordering ``ranked_docs`` (best first).

    ``n_known``: with top-k access only the first ``n_known`` documents are ordered; the rest
    of ``ranked_docs`` are known to rank below them (in unknown order) and only serve as tail
    negatives.
    """
    from .training import Group

    docs = list(ranked_docs)
    n_known = len(docs) if n_known is None else min(n_known, len(docs))
    top = docs[: min(k, n_known)]
    below = docs[len(top):]
    groups = []
    if recipe in ("topk_all_pairs", "top25_plus_tail"):
        for i in range(len(top)):
            for j in range(i + 1, len(top)):
                groups.append(Group(query, [top[i], top[j]]))
        if recipe == "top25_plus_tail" and below and tail > 0:
            for d in top:
                pick = rng.choice(len(below), size=min(tail, len(below)), replace=False)
                for t in sorted(pick):
                    groups.append(Group(query, [d, below[t]]))
    elif recipe == "pseudo_relevance":
        pool = docs[2 * len(top):] if len(docs) > 2 * len(top) + tail else below
        if pool and tail > 0:
            for d in top:
                pick = rng.choice(len(pool), size=min(tail, len(pool)), replace=False)
                groups.append(Group(query, [d] + [pool[t] for t in sorted(pick)]))
    else:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {RECIPES}")
    return groups


def _victim_order(victim, query: str, texts: list[str], docnos: list[str]) -> tuple[list[str], int]:
    """(docnos best first, how many of them are ordered) through an Oracle or a plain Ranker."""
    if isinstance(victim, Oracle):
        if victim.access == "topk":
            top = victim.topk(query, texts, docnos)
            rest = [d for d in docnos if d not in set(top)]
            return top + rest, len(top)
        return victim.ranking(query, texts, docnos), len(docnos)
    if isinstance(victim, Ranker):
        s = victim.score(query, texts)
        return [docnos[i] for i in np.argsort(-s, kind="stable")], len(docnos)
    raise TypeError(f"victim must be an Oracle or a Ranker, got {type(victim).__name__}")


def _qid_list(col, queries) -> list[str]:
    if queries is None:
        return col.queries["qid"].astype(str).tolist()
    if hasattr(queries, "columns"):
        return queries["qid"].astype(str).tolist()
    return [str(q) for q in queries]


# ------------------------------------------------------------------------------ training

def train_surrogate(victim: Oracle, col, queries, recipe: str = "top25_plus_tail",
                    base: str = "minilm", loss: str = "ranknet", epochs: int | None = None,
                    seed: int = 0, k: int | None = None, first_stage: str = "bm25",
                    candidates_k: int | None = None, tail: int | None = None,
                    max_pairs: int | None = None, lr: float | None = None,
                    batch_size: int | None = None, max_length: int | None = None,
                    progress: bool = True, holdout: float = 0.2, eval_every: int | None = None,
                    patience: int | None = None):
    """Train a surrogate that imitates ``victim`` on the attacker's ``queries``: a cross-encoder,
    or with ``base="glove"`` a bag-of-embeddings bi-encoder (:mod:`rankers.bow`).

    Every size left ``None`` takes its family's value in :data:`IMITATION_DEFAULTS`. They are
    sized for a CPU. Cross-encoder: for 20 attacker queries, 16 training queries x 33 pairs ->
    528 pairs, 33 steps of 16 pairs cut at 128 word pieces (~3.7 s a step on 2 cores, about 2.5
    minutes in all), a learning rate (3e-4) that moves the RankNet loss within the first steps
    (1e-4 left it at ln 2 after 33 steps), early stopping on agreement with the victim's
    rankings of the 4 held-out queries. Glove: the victim ranks BM25 top-100 of each attacker
    query; 25 x 24 / 2 top pairs + 25 x 4 tail pairs per query, batches of 64, lr 0.01, up to 5
    epochs with a held-out check every 50 steps (~2-3 minutes for 100 queries on 2 cores).

    Parameters
    ----------
    victim : an :class:`Oracle` (victim queries are counted; access ``rank``/``score`` gives the
        full order of the candidates, ``topk`` only the top ``oracle.k``) or a plain
        :class:`Ranker` (not counted).
    col : the collection (documents, queries, first-stage candidates).
    queries : the attacker's qids (a list or a frame with ``qid``); keep them disjoint from the
        queries that will be attacked.
    Sizes in parentheses are the cross-encoder defaults (glove: :data:`IMITATION_DEFAULTS`).

    first_stage, candidates_k : the lists the victim ranks for the attacker (BM25 top-30: 30
        victim queries per attacker query; the tail negatives come from ranks 7..30).
    recipe, k, tail : pair sampling (module doc; default ``top25_plus_tail`` with ``k=6``,
        ``tail=3``: 15 top pairs + 18 tail pairs per query).
    base : ``glove`` (a bag-of-embeddings bi-encoder from GloVe 6B 50d over the collection's
        words), or ``minilm``, a model folder or a hub id
        (the encoder of a cross-encoder; the head starts fresh from ``seed``).
    loss : ``hinge`` (margin 1), ``ranknet`` (label smoothing 0.1) or ``listwise``.
    max_pairs : cap on the training groups (a seeded sample; 640 = 40 steps of 16).
    lr, batch_size, epochs : AdamW learning rate (3e-4, linear warm-up over 10 % of the steps
        then linear decay), groups per step (16), passes over the groups (1).
    max_length : word pieces (words for glove) per text (128; capped by the model's own limit).
    holdout : share of the attacker's queries (0.2; at least 1, and only with >= 5 queries) kept
        out of training: their victim rankings (already paid for) measure agreement every
        ``eval_every`` (10) steps; training stops when overlap@10 has not improved for
        ``patience`` (2) evaluations, and the best weights are kept. ``holdout=0`` disables it.
    progress : a tqdm bar over the steps (loss and held-out overlap@10 in its postfix).

    Returns the trained :class:`~rankers.encoders.CrossEncoder` or
    :class:`~rankers.bow.BagOfEmbeddingsEncoder` (eval mode) with an
    ``imitation_info`` dict: victim name, qids (training and ``holdout_qids``),
    ``victim_queries`` (pairs scored by the victim), recipe, k, tail, loss, epochs, lr,
    ``n_groups``, ``steps`` (taken) of ``planned_steps``, ``stopped_early``, final loss,
    ``agreement`` (held-out ``overlap@10`` and ``rbo``, or ``None``), seconds.
    """
    from .training import TrainConfig

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {RECIPES}")
    d = imitation_defaults(base)
    k = int(d["k"] if k is None else k)
    tail = int(d["tail"] if tail is None else tail)
    candidates_k = int(d["candidates_k"] if candidates_k is None else candidates_k)
    max_pairs = int(d["max_pairs"] if max_pairs is None else max_pairs)
    lr = float(d["lr"] if lr is None else lr)
    epochs = int(d["epochs"] if epochs is None else epochs)
    batch_size = int(d["batch_size"] if batch_size is None else batch_size)
    max_length = int(d["max_length"] if max_length is None else max_length)
    eval_every = int(d["eval_every"] if eval_every is None else eval_every)
    patience = int(d["patience"] if patience is None else patience)
    if k < 2 and recipe != "pseudo_relevance":
        raise ValueError("k must be >= 2 for pair recipes")
    if not 0 <= float(holdout) < 1:
        raise ValueError(f"holdout is a fraction in [0, 1), got {holdout}")
    qids = _qid_list(col, queries)
    if not qids:
        raise ValueError("no queries to imitate the victim on; give the attacker's qids")
    t0 = time.perf_counter()
    # built before any victim query: a bad base (a misspelt name, a missing folder) fails
    # before the attacker has paid for the victim's rankings
    model = new_surrogate(str(base), col, seed=seed)
    used0 = victim.queries_used if isinstance(victim, Oracle) else 0
    rng = np.random.default_rng(seed)
    n_hold = max(1, int(round(holdout * len(qids)))) if holdout > 0 and len(qids) >= 5 else 0
    hold = set(sorted(qids)[i] for i in rng.permutation(len(qids))[:n_hold]) if n_hold else set()
    cands = col.candidates(first_stage, k=candidates_k, qids=qids)
    groups, held = [], []
    for qid, g in cands.groupby("qid", sort=True):
        g = g.sort_values("rank")
        texts, docnos = g["text"].tolist(), g["docno"].astype(str).tolist()
        if len(texts) < 2:
            continue
        query = str(g["query"].iloc[0])
        order, n_known = _victim_order(victim, query, texts, docnos)
        if str(qid) in hold:
            held.append((query, texts, docnos, order[:n_known]))
            continue
        by_no = dict(zip(docnos, texts))
        for grp in sample_groups(order, query, recipe, k, tail, rng, n_known):
            grp.docs = [by_no[d] for d in grp.docs]
            groups.append(grp)
    if not groups:
        raise ValueError(f"no training pairs: the queries {qids[:5]} have fewer than 2 candidates")
    if len(groups) > max_pairs:
        pick = np.sort(rng.choice(len(groups), size=int(max_pairs), replace=False))
        groups = [groups[i] for i in pick]
    model.max_length = min(model.max_length, max_length)  # never beyond the model's own limit
    cfg = TrainConfig(loss=loss, epochs=int(epochs), lr=float(lr), batch_size=int(batch_size),
                      seed=int(seed))

    def held_agreement() -> dict:
        ov, rb = [], []
        for query, texts, docnos, v_order in held:
            _compare(v_order, docnos, model.score(query, texts), ov, rb, 0.7, 10)
        return _agreement_means(ov, rb, 10)

    hist = _train_with_early_stopping(model, groups, cfg, held_agreement if held else None,
                                      int(eval_every), int(patience), progress)
    used = (victim.queries_used - used0) if isinstance(victim, Oracle) else 0
    tail_loss = hist["loss"][-20:]
    model.imitation_info = {
        "victim": getattr(victim, "name", type(victim).__name__),
        "qids": [q for q in qids if q not in hold], "holdout_qids": sorted(hold),
        "victim_queries": int(used), "recipe": recipe, "k": k, "tail": tail, "loss": loss,
        "epochs": int(epochs), "lr": float(lr), "n_groups": len(groups), "seed": int(seed),
        "base": str(base), "first_stage": first_stage, "candidates_k": int(candidates_k),
        "max_length": model.max_length, "batch_size": batch_size, "steps": len(hist["loss"]),
        "planned_steps": hist["planned_steps"], "stopped_early": hist["stopped_early"],
        "agreement": hist["agreement"],
        "final_loss": float(np.mean(tail_loss)) if tail_loss else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if progress and hist["agreement"]:
        a = hist["agreement"]
        print(f"surrogate: {len(hist['loss'])}/{hist['planned_steps']} steps, held-out agreement "
              f"overlap@10 {a['overlap@10']:.3f}, RBO {a['rbo']:.3f} "
              f"({a['n_queries']} queries), {model.imitation_info['seconds']:.0f}s", flush=True)
    return model


def adapt_surrogate(model, query: str, ranked_texts: Sequence[str], n_known: int | None = None,
                    epochs: int = 3, lr: float = 1e-2, batch_size: int = 64, k: int = 25,
                    tail: int = 4, seed: int = 0):
    """A copy of ``model`` fine-tuned on the victim's ordering of one query's list.

    ``ranked_texts``: the list's documents in the victim's order, best first (the first
    ``n_known`` ordered, the rest only known to rank below them). Pairs: recipe
    ``top25_plus_tail`` (``k``, ``tail``); label-smoothed RankNet, ``epochs`` passes of
    ``batch_size`` groups at ``lr``. ``model`` is never modified; the copy is in eval mode with a
    fresh embedding cache. ``model`` must be trainable (it has ``forward_scores``: a
    cross-encoder or a bag-of-embeddings bi-encoder)."""
    import copy

    from .training import TrainConfig, train_cross_encoder

    if not hasattr(model, "forward_scores"):
        raise TypeError(f"{getattr(model, 'name', type(model).__name__)} cannot be adapted: it "
                        "has no forward_scores (use a cross-encoder or a bag-of-embeddings "
                        "surrogate)")
    rng = np.random.default_rng(seed)
    groups = sample_groups(list(ranked_texts), query, "top25_plus_tail", int(k), int(tail), rng,
                           n_known)
    cache = getattr(model, "_emb_cache", None)
    try:  # never copy the (possibly large) embedding cache
        if cache is not None:
            model._emb_cache = None
        out = copy.deepcopy(model)
    finally:
        if cache is not None:
            model._emb_cache = cache
    if hasattr(out, "clear_cache"):
        out.clear_cache()
    if groups:
        cfg = TrainConfig(loss="ranknet", epochs=int(epochs), lr=float(lr),
                          batch_size=int(batch_size), seed=int(seed))
        train_cross_encoder(out, groups, cfg, progress=False)
    if hasattr(out, "clear_cache"):
        out.clear_cache()
    out.model.eval()
    return out


def new_surrogate(base: str, col=None, seed: int = 0):
    """A fresh, trainable surrogate: ``base="glove"`` a bag-of-embeddings bi-encoder
    (:mod:`rankers.bow`) over ``col``'s words (GloVe vectors; words GloVe lacks start at zero);
    only words the imitation data contains get trained, so no other word is offered; anything
    else a cross-encoder whose encoder starts from ``base`` (``minilm``, a folder or hub id) with
    a fresh head from ``seed``."""
    if base == "glove":
        from .bow import BagOfEmbeddingsEncoder, glove_vocabulary

        texts = [] if col is None else (col.documents["text"].tolist()
                                        + col.queries["query"].tolist())
        words, vecs = glove_vocabulary(texts, top=0)
        return BagOfEmbeddingsEncoder.from_vectors(words, vecs, name="bow:glove")
    from .training import new_cross_encoder

    try:
        return new_cross_encoder(base, seed=seed)
    except OSError as e:
        raise ValueError(
            f"surrogate base {base!r} could not be loaded ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160]}). Use 'glove' (a bag-of-embeddings model from the "
            "packaged GloVe vectors), 'minilm' (the packaged encoder), a local model folder, or "
            "a hub id that is in the local cache") from e


def _train_with_early_stopping(model, groups, cfg, evaluate, eval_every: int, patience: int,
                               progress: bool) -> dict:
    """:func:`rankers.training.train_cross_encoder` with a held-out agreement check every
    ``eval_every`` steps (``evaluate() -> {"overlap@10", ...}``); stops after ``patience`` checks
    without a better overlap@10 (ties: higher RBO) and restores the best weights."""
    import copy

    from .training import train_cross_encoder

    net = model.model
    state: dict = {"best": None, "key": None, "weights": None, "bad": 0}

    def check():
        was = net.training
        net.eval()
        a = evaluate()
        net.train(was)
        key = (a["overlap@10"], a["rbo"])
        if state["key"] is None or key > state["key"]:
            state.update(best=a, key=key, weights=copy.deepcopy(net.state_dict()), bad=0)
        else:
            state["bad"] += 1

    def on_step(step: int, losses: list) -> bool:
        if evaluate is None or step % eval_every:
            return False
        check()
        return state["bad"] >= patience

    hist = train_cross_encoder(model, groups, cfg, progress=progress, on_step=on_step,
                               desc=f"imitation {cfg.loss}")
    if evaluate is not None and not hist["stopped_early"] and hist["steps_done"] % eval_every:
        check()
    if state["weights"] is not None:
        net.load_state_dict(state["weights"])
    net.eval()
    if hasattr(model, "clear_cache"):  # embeddings cached by the last check are stale
        model.clear_cache()
    return {"loss": hist["loss"], "planned_steps": hist["steps"],
            "stopped_early": hist["stopped_early"], "agreement": state["best"]}


def agreement(victim_or_ranker, surrogate: Ranker, col, queries, first_stage: str = "bm25",
              candidates_k: int = 100, p: float = 0.7, at: int = 10) -> dict:
    """Agreement of ``surrogate`` with the victim on ``queries``' first-stage candidates.

    ``victim_or_ranker``: an :class:`Oracle` (counted queries) or a :class:`Ranker` (not counted).
    Returns ``{"overlap@10": mean, "rbo": mean RBO_ext(p), "n_queries": n, "victim_queries": n}``
    (the overlap key follows ``at``).
    """
    qids = _qid_list(col, queries)
    cands = col.candidates(first_stage, k=candidates_k, qids=qids)
    used0 = victim_or_ranker.queries_used if isinstance(victim_or_ranker, Oracle) else 0
    ov, rb = [], []
    for qid, g in cands.groupby("qid", sort=True):
        g = g.sort_values("rank")
        texts, docnos = g["text"].tolist(), g["docno"].astype(str).tolist()
        query = str(g["query"].iloc[0])
        v_order, _ = _victim_order(victim_or_ranker, query, texts, docnos)
        _compare(v_order, docnos, surrogate.score(query, texts), ov, rb, p, at)
    used = (victim_or_ranker.queries_used - used0) if isinstance(victim_or_ranker, Oracle) else 0
    return {**_agreement_means(ov, rb, at), "victim_queries": int(used)}


def run_agreement(run, score, p: float = 0.7, at: int = 10) -> dict:
    """Agreement of a surrogate with a victim run already ranked (no victim queries).

    ``run``: the victim's ranked frame (``qid, query, docno, text, rank``; ranks 1-based);
    ``score(query, texts) -> scores``: the surrogate (e.g. ``surrogate.score``).
    Returns ``{"overlap@10", "rbo", "n_queries"}`` as :func:`agreement`.
    """
    ov, rb = [], []
    for _, g in run.groupby("qid", sort=True):
        g = g.sort_values("rank")
        docnos = g["docno"].astype(str).tolist()
        _compare(docnos, docnos, score(str(g["query"].iloc[0]), g["text"].tolist()), ov, rb, p,
                 at)
    return _agreement_means(ov, rb, at)


def _compare(v_order, docnos, s, ov, rb, p, at):
    s_order = [docnos[i] for i in np.argsort(-np.asarray(s), kind="stable")]
    ov.append(overlap_at(v_order, s_order, at))
    rb.append(rbo(v_order, s_order, p))


def _agreement_means(ov, rb, at) -> dict:
    return {f"overlap@{at}": float(np.mean(ov)) if ov else float("nan"),
            "rbo": float(np.mean(rb)) if rb else float("nan"), "n_queries": len(ov)}
