"""Cost of certification (certdr vs rigorous vs adaptive) and smoothing modes compared.

``--compare modes`` (default): the certification modes side by side in one run (below).
``--compare smoothing``: synonym smoothing with the published sets, synonym smoothing with
clustered sets and masking smoothing, each on the base ranker and on a cross-encoder trained
from MiniLM with the matching noise, all certified on the same lists; see
:func:`smoothing_comparison`.

Modes comparison:

On a BEIR collection (default: the shared Cranfield copy), MiniLM re-ranks the BM25 top-``k``
(10) of a seeded sample of queries (10); the smoothed ranker draws N (500) samples per document
(the adaptive mode's cap). Printed: per mode the base forward passes, wall seconds and CRQ@1/3/5;
the ratios adaptive / rigorous (forward passes, wall time) and whether the two modes issued the
same certificates; and the smoothed ranker's nDCG@10 against the base ranker's on the same lists.

certdr and rigorous share one set of draws (same seed, same streams): rigorous runs first on a
fresh model, certdr then reuses the encoder's embedding cache, so its wall time is the extra
time of its test alone and its forward passes are the shared ones. adaptive runs on a fresh model
instance (empty cache). Smoothing sets and radii are built once before any timing ("setup").
Ratios, not absolute times, are the result (machines are noisy); the total wall time is printed.

    python bench/certify.py [PATH] [--queries 10] [--samples 500] [--k 10] [--alpha 0.05]
                            [--n0 32] [--futility 3] [--bound hoeffding] [--R N]
                            [--no-symmetric] [--threat SPEC] [--dtype bf16] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

DEFAULT_PATH = str(Path(__file__).resolve().parents[2] / "shared/data/collections/cranfield")


def _crq(cert, K):
    row = cert.crq[cert.crq["K"] == K]
    return float(row["CRQ"].iloc[0]) if len(row) else float("nan")


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--compare" in argv and argv[argv.index("--compare") + 1:][:1] == ["smoothing"]:
        i = argv.index("--compare")
        return smoothing_comparison(argv[:i] + argv[i + 2:])
    if "--compare" in argv:
        i = argv.index("--compare")
        if argv[i + 1:][:1] != ["modes"]:
            raise SystemExit("--compare takes 'modes' (default) or 'smoothing'")
        argv = argv[:i] + argv[i + 2:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", default=DEFAULT_PATH, help="BEIR folder (or 'demo')")
    ap.add_argument("--queries", type=int, default=10, help="seeded sample of queries")
    ap.add_argument("--samples", type=int, default=500, help="N (adaptive: the cap)")
    ap.add_argument("--k", type=int, default=10, help="BM25 candidates per query")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--n0", type=int, default=32, help="adaptive: first look")
    ap.add_argument("--bound", default="hoeffding", choices=["hoeffding", "bernstein"],
                    help="confidence bound of rigorous and adaptive (certdr: always Hoeffding)")
    ap.add_argument("--futility", type=float, default=3.0,
                    help="adaptive: futility z (negative: off)")
    ap.add_argument("--R", type=int, default=None, help="word budget (default: every word)")
    ap.add_argument("--ranker", default="minilm")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="encoder precision (bf16: faster on CPUs with bf16 support)")
    ap.add_argument("--threat", default="wordnet+glove")
    ap.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=True,
                    help="close the threat model under symmetry on the collection vocabulary "
                         "(default, as the certify job; --no-symmetric: the threat as given)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    import ranklab
    from attacks.threat import load_threat_model
    from defenses.certify import certify
    from defenses.smoothing import SmoothedRanker, SmoothingSets
    from attacks.threat import symmetric_closure
    from defenses.smoothing import default_temperature
    from ranklab.display import print_table as _print_table
    from ranklab.collections import load_collection

    t_all = time.perf_counter()
    ks = [K for K in (1, 3, 5) if K < args.k]
    col = load_collection(args.path).sample_queries(args.queries, args.seed)
    cands = col.candidates("bm25", k=args.k)
    kw = {} if args.dtype == "fp32" else {"dtype": args.dtype}
    base = col.ranker(args.ranker, **kw)
    t = time.perf_counter()
    base_run = base.transform(cands)
    base_s = time.perf_counter() - t
    ndcg_base = ranklab.evaluate(base_run, col.qrels, ["nDCG@10"])["nDCG@10"]
    center = float(np.median(base_run["score"]))
    T = default_temperature(base)

    t = time.perf_counter()
    threat = load_threat_model(args.threat)
    if args.symmetric:
        threat = symmetric_closure(threat, col)
    sets = SmoothingSets(threat)
    radii = np.array([sets.radius(x, args.R) for x in cands["text"]])
    setup_s = time.perf_counter() - t
    print(f"{col.name}: {cands['qid'].nunique()} queries x {args.k} candidates, N={args.samples}, "
          f"alpha={args.alpha}, ranker {base.name} (T={T}, center={center:.4f}), threat "
          f"{threat.name} [{threat.fingerprint}]; radii median {np.median(radii):.3f}, "
          f"share 0: {np.mean(radii == 0):.2f}; setup {setup_s:.1f}s", flush=True)

    def smoothed_on_fresh_model():
        fresh = col.ranker(args.ranker, **kw)  # empty embedding cache
        return SmoothedRanker(fresh, sets, n_samples=args.samples, seed=args.seed,
                              temperature=T, center=center)

    results = {}
    common = dict(ks=ks, alpha=args.alpha, R=args.R, progress=not args.quiet)
    sm = smoothed_on_fresh_model()
    t = time.perf_counter()
    results["rigorous"] = (certify(sm, cands, mode="rigorous", bound=args.bound, **common),
                           time.perf_counter() - t)
    print(f"rigorous done in {results['rigorous'][1]:.1f}s", flush=True)
    t = time.perf_counter()
    results["certdr"] = (certify(sm, cands, mode="certdr", **common), time.perf_counter() - t)
    sm_a = smoothed_on_fresh_model()
    t = time.perf_counter()
    fut = None if args.futility < 0 else args.futility
    results["adaptive"] = (certify(sm_a, cands, mode="adaptive", n0=args.n0, bound=args.bound,
                                   futility=fut, **common), time.perf_counter() - t)
    print(f"adaptive done in {results['adaptive'][1]:.1f}s", flush=True)

    rows, out = [], {}
    for mode in ("certdr", "rigorous", "adaptive"):
        cert, secs = results[mode]
        fwd = int(cert.frame.drop_duplicates("qid")["n_forward"].sum())
        row = {"mode": mode, "forward passes": fwd, "wall s": f"{secs:.1f}",
               **{f"CRQ@{K}": _crq(cert, K) for K in ks},
               "note": "draws shared with rigorous (wall: its extra time)" if mode == "certdr"
               else (f"cap N={args.samples}, n0={args.n0}, futility z={fut}"
                     if mode == "adaptive" else "")}
        rows.append(row)
        out[mode] = {k: v for k, v in row.items() if k != "mode"}
    r, a = results["rigorous"][0].frame, results["adaptive"][0].frame
    same = (r.sort_values(["qid", "K"])["certified"].to_numpy()
            == a.sort_values(["qid", "K"])["certified"].to_numpy())
    ratio_fwd = out["adaptive"]["forward passes"] / max(out["rigorous"]["forward passes"], 1)
    ratio_wall = results["adaptive"][1] / max(results["rigorous"][1], 1e-9)
    docs = results["rigorous"][0].docs.rename(columns={"g": "score"})
    sm_run = cands[["qid", "docno"]].astype(str).merge(
        docs[["qid", "docno", "score"]].astype({"qid": str, "docno": str}), on=["qid", "docno"])
    ndcg_sm = ranklab.evaluate(sm_run, col.qrels, ["nDCG@10"])["nDCG@10"]

    print()
    _print_table(rows)
    print()
    cert_r = int(r[~r["trivial"]]["certified"].sum())
    cert_a = int(a[~a["trivial"]]["certified"].sum())
    print(f"adaptive / rigorous: forward passes {ratio_fwd:.3f}, wall {ratio_wall:.3f}; "
          f"certificates equal on {same.mean():.0%} of (query, K) "
          f"({cert_r} certified by rigorous, {cert_a} by adaptive, of {len(r)})")
    print(f"nDCG@10 base {ndcg_base:.4f}  smoothed (rigorous, N={args.samples}) {ndcg_sm:.4f}  "
          f"(delta {ndcg_sm - ndcg_base:+.4f}); base ranking {base_s:.1f}s")
    total = time.perf_counter() - t_all
    print(f"total wall time {total:.0f}s ({total / 60:.1f} min) on {os.cpu_count()} CPUs, "
          f"torch threads {__import__('torch').get_num_threads()}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "modes": out, "ratio_forward": ratio_fwd, "ratio_wall": ratio_wall,
            "certificates_equal": float(same.mean()), "nDCG@10_base": ndcg_base,
            "nDCG@10_smoothed": ndcg_sm, "median_radius": float(np.median(radii)),
            "setup_s": setup_s, "total_s": total}, indent=2))
    return 0


# -- smoothing modes compared -------------------------------------------------------------------
def _tune_squash(scores_by_query, ks, target_gap=0.3):
    """(center, temperature) for the sigmoid squash, chosen on REFERENCE queries' scores (never
    the bench's lists): the pair from a small grid that makes the most squashed gaps at the K
    boundaries (top-K minimum minus the best outside score) exceed ``target_gap``; ties: larger
    mean gap. A fixed function chosen before any certification draw."""
    from scipy.special import expit

    pooled = np.concatenate([np.asarray(v, float) for v in scores_by_query])
    scale = float(np.std(pooled)) or 1.0
    best = None
    for cq in (0.5, 0.7, 0.8, 0.9, 0.95):
        c = float(np.quantile(pooled, cq))
        for tf in (0.05, 0.1, 0.2, 0.4, 0.8):
            T = tf * scale
            hits, gaps = 0, []
            for v in scores_by_query:
                sq = np.sort(expit((np.asarray(v, float) - c) / T))[::-1]
                for K in ks:
                    if K < len(sq):
                        gaps.append(sq[K - 1] - sq[K])
                        hits += gaps[-1] > target_gap
            key = (hits, float(np.mean(gaps)) if gaps else 0.0)
            if best is None or key > best[0]:
                best = (key, c, T)
    return best[1], best[2]


def smoothing_comparison(argv) -> int:
    """Synonym (published sets), synonym (clustered sets) and masking smoothing, each with the
    base ranker and with a cross-encoder trained from MiniLM on the matching noise, certified
    (adaptive mode) on the same lists: CRQ@K with Wilson intervals at a budget of ``--r-share``
    of each document's words (default 5 %), the median certified radius, nDCG@10 of the base
    model and of its smoothed ranker, forward passes and seconds.

    Queries are split (seeded) into the bench queries, reference queries (the squash center and
    temperature of every configuration are tuned on their lists, never on the bench's) and
    training queries (noisy training groups). Smoothed nDCG@10 ranks by the adaptive estimates
    ``g`` (documents far from every boundary have few samples, so it is a noisy estimate of the
    smoothed ranker's effectiveness).

        python bench/certify.py --compare smoothing [PATH] [--queries 20] [--k 10]
            [--samples 256] [--n0 16] [--r-share 0.05] [--keep-count 4] [--mask drop]
            [--cluster-size 100] [--train-groups 96] [--no-train] [--json OUT]
    """
    ap = argparse.ArgumentParser(description=smoothing_comparison.__doc__.split("\n\n")[0])
    ap.add_argument("path", nargs="?", default=DEFAULT_PATH, help="BEIR folder")
    ap.add_argument("--queries", type=int, default=20, help="bench queries (seeded sample)")
    ap.add_argument("--ref-queries", type=int, default=10,
                    help="reference queries for the squash center/temperature")
    ap.add_argument("--train-queries", type=int, default=60, help="queries for noisy training")
    ap.add_argument("--k", type=int, default=10, help="BM25 candidates per query")
    ap.add_argument("--samples", type=int, default=256, help="adaptive cap N")
    ap.add_argument("--n0", type=int, default=16, help="adaptive: first look")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--bound", default="kl", choices=["hoeffding", "bernstein", "kl"])
    ap.add_argument("--futility", type=float, default=2.0)
    ap.add_argument("--r-share", type=float, default=0.05,
                    help="budget: share of each outside document's words the attacker changes")
    ap.add_argument("--keep-count", type=int, default=4, help="masking: words kept")
    ap.add_argument("--keep", type=float, default=None,
                    help="masking: share of words kept instead of --keep-count")
    ap.add_argument("--mask", default="drop", choices=["token", "drop"])
    ap.add_argument("--cluster-size", type=int, default=100, help="clustered sets: max size")
    ap.add_argument("--threat", default="wordnet+glove")
    ap.add_argument("--ranker", default="minilm")
    ap.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                    help="also train cross-encoders from MiniLM with matched noise")
    ap.add_argument("--train-groups", type=int, default=96, help="training groups (1+3 docs)")
    ap.add_argument("--train-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=128,
                    help="token limit of the base ranker and the trained cross-encoders (the "
                         "packaged MiniLM's own is 256; 128 halves the cost of a forward pass)")
    ap.add_argument("--target-gap", type=float, default=0.5,
                    help="squash tuning: squashed gap at the K boundaries to aim for")
    ap.add_argument("--only", default=None,
                    help="comma-separated smoothing names to run (published,clustered,mask)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)

    import ranklab
    from attacks.text import tokenize
    from attacks.threat import load_threat_model
    from defenses.certify import certify
    from defenses.clusters import cluster_sets, radius_table
    from defenses.masking import MaskedSmoothedRanker, mask_noise_transform
    from defenses.smoothing import SmoothedRanker, SmoothingSets, noise_transform
    from attacks.threat import symmetric_closure
    from ranklab.display import print_table as _print_table
    from ranklab.collections import load_collection
    from ranklab.report import compare_modes
    from rankers.training import (TrainConfig, groups_from_qrels, new_cross_encoder,
                                  train_cross_encoder)

    t_all = time.perf_counter()
    full = load_collection(args.path)
    qids = [str(q) for q in np.random.default_rng(args.seed).permutation(
        full.queries["qid"].astype(str).tolist())]
    judged = set(full.qrels["qid"].astype(str))
    qids = [q for q in qids if q in judged]
    nq, nr = args.queries, args.ref_queries
    col, ref = full.subset(qids[:nq]), full.subset(qids[nq: nq + nr])
    train_col = full.subset(qids[nq + nr: nq + nr + args.train_queries])
    cands = col.candidates("bm25", k=args.k)
    ref_cands = ref.candidates("bm25", k=args.k)
    ks = [K for K in (1, 3, 5, 10) if K < args.k]
    names = ["published", "clustered", "mask"] if not args.only else args.only.split(",")
    times = {}

    t = time.perf_counter()
    threat = symmetric_closure(load_threat_model(args.threat), full)
    sets = {"published": SmoothingSets(threat),
            "clustered": cluster_sets(threat, texts=full.documents["text"].tolist(),
                                      max_size=args.cluster_size, seed=args.seed)}
    texts = cands["text"].tolist()
    rt = radius_table(texts, sets, r_share=args.r_share)
    times["setup"] = time.perf_counter() - t
    n_words = np.array([len(tokenize(x).word_idx) for x in texts])
    print(f"{full.name}: {nq} bench queries x {args.k} BM25 candidates (words: median "
          f"{np.median(n_words):.0f}, budget r = floor({args.r_share} n), median "
          f"{np.median(np.floor(args.r_share * n_words + 1e-9)):.0f} words); threat {threat.name}; "
          f"setup {times['setup']:.0f}s", flush=True)
    info = sets["clustered"].cluster_info
    print(f"clustered sets (max {args.cluster_size}): {info['edge_share']:.1%} of "
          f"{info['n_edges']} attack edges inside clusters, clean words {info['clean_share']:.1%} "
          f"(by occurrence {info['clean_token_share']:.1%}), {info['n_clusters']} clusters",
          flush=True)
    print(f"document radii Delta_d at r = {args.r_share:.0%} of words (candidates):")
    print(rt.to_string(index=False, float_format=lambda x: f"{x:.3f}"), flush=True)

    base_model = col.ranker(args.ranker, max_length=args.max_length)
    mask_kw = ({"keep": args.keep} if args.keep is not None else {"keep_count": args.keep_count})
    mask_tok = getattr(getattr(base_model, "tokenizer", None), "mask_token", None)
    groups = []
    if args.train:
        train_cands = train_col.candidates("bm25", k=20)
        groups = groups_from_qrels(train_col, train_cands, n_negatives=3, seed=args.seed)
        rng = np.random.default_rng(args.seed)
        groups = [groups[i] for i in sorted(rng.choice(len(groups), min(args.train_groups,
                                                                        len(groups)),
                                                       replace=False))]
    noises = {"published": lambda: noise_transform(sets["published"], seed=args.seed),
              "clustered": lambda: noise_transform(sets["clustered"], seed=args.seed),
              "mask": lambda: mask_noise_transform(**mask_kw, mask=args.mask,
                                                   mask_token=mask_tok, seed=args.seed)}

    def trained(name):
        """A cross-encoder from MiniLM trained on the noise of smoothing ``name``."""
        t = time.perf_counter()
        ce = new_cross_encoder(args.ranker, seed=args.seed, max_length=args.max_length)
        hist = train_cross_encoder(ce, groups, TrainConfig(
            loss="listwise", epochs=args.train_epochs, lr=args.lr, batch_size=4,
            seed=args.seed), progress=not args.quiet, doc_transform=noises[name]())
        times[f"train {name}"] = time.perf_counter() - t
        ce.name = f"ce-noise-{name}"
        print(f"trained {ce.name} on {len(groups)} groups, {hist['steps']} steps, final loss "
              f"{np.mean(hist['loss'][-5:]):.3f}, {times[f'train {name}']:.0f}s", flush=True)
        return ce

    # the base model first (all smoothings), then one trained model per smoothing, trained just
    # before it is certified, so partial results come early
    plan = [("base", lambda: base_model, names)] + (
        [(f"noise:{n}", (lambda n=n: trained(n)), [n]) for n in names] if args.train else [])
    rows, certs, out = [], {}, {}
    for mkey, get_model, todo in plan:
        model = get_model()
        t = time.perf_counter()
        run = model.transform(cands)
        ndcg_base = ranklab.evaluate(run, col.qrels, ["nDCG@10"])["nDCG@10"]
        ref_run = model.transform(ref_cands)
        base_s = time.perf_counter() - t
        for name in todo:
            t = time.perf_counter()
            if name == "mask":
                probe = MaskedSmoothedRanker(model, **mask_kw, mask=args.mask, n_samples=4,
                                             seed=args.seed + 1)
                ref_scores = [model.score_pairs(
                    [q] * 4 * len(g), [x for d in g["text"] for x in probe.sample_texts(q, d, 4)])
                    for q, g in ref_cands.groupby("query", sort=False)]
                ref_scores = [s.reshape(-1, 4).mean(axis=1) for s in ref_scores]
            else:
                ref_scores = [g["score"].to_numpy() for _, g in ref_run.groupby("qid")]
            center, T = _tune_squash(ref_scores, ks, target_gap=args.target_gap)
            if name == "mask":
                sm = MaskedSmoothedRanker(model, **mask_kw, mask=args.mask,
                                          mask_token=mask_tok, n_samples=args.samples,
                                          seed=args.seed, temperature=T, center=center)
            else:
                sm = SmoothedRanker(model, sets[name], n_samples=args.samples, seed=args.seed,
                                    temperature=T, center=center)
            tune_s = time.perf_counter() - t
            t = time.perf_counter()
            cert = certify(sm, cands, ks=ks, alpha=args.alpha, mode="adaptive", n0=args.n0,
                           bound=args.bound, futility=args.futility, r_share=args.r_share,
                           progress=not args.quiet)
            secs = time.perf_counter() - t
            docs = cert.docs.rename(columns={"g": "score"})
            sm_run = cands[["qid", "docno"]].astype(str).merge(
                docs[["qid", "docno", "score"]].astype({"qid": str, "docno": str}),
                on=["qid", "docno"])
            ndcg_sm = ranklab.evaluate(sm_run, col.qrels, ["nDCG@10"])["nDCG@10"]
            label = f"{name} | {'MiniLM' if mkey == 'base' else 'CE+matched noise'}"
            certs[label] = cert
            cmp = compare_modes({label: cert}).set_index("K")
            k1 = cert.frame[(cert.frame["K"] == ks[0]) & ~cert.frame["trivial"]]
            row = {"smoothing | model": label,
                   **{f"CRQ@{K}": f"{cmp.loc[K, 'CRQ']:.2f} [{cmp.loc[K, 'ci_low']:.2f},"
                                  f"{cmp.loc[K, 'ci_high']:.2f}]" for K in ks},
                   "med radius@1 words": float(k1["radius_words"].median()),
                   "med radius@1 share": float(k1["radius_share"].median()),
                   "nDCG@10 base": round(ndcg_base, 4), "nDCG@10 smoothed": round(ndcg_sm, 4),
                   "fwd": int(cert.frame.drop_duplicates("qid")["n_forward"].sum()),
                   "certify s": round(secs, 1), "center": round(center, 4), "T": round(T, 4),
                   "median Delta": round(float(cert.docs["delta"].median()), 4)}
            rows.append(row)
            out[label] = {**row, "crq": {int(K): float(cmp.loc[K, "CRQ"]) for K in ks},
                          "tune_s": tune_s, "base_rank_s": base_s,
                          "radius_words_by_K": {int(K): cert.frame[cert.frame["K"] == K][
                              "radius_words"].tolist() for K in ks}}
            print(f"{label}: done in {secs:.0f}s; " + ", ".join(
                f"{k}={v}" for k, v in row.items() if k != "smoothing | model"), flush=True)
            if args.json:  # partial results survive an interrupted run
                Path(args.json).write_text(json.dumps({"args": vars(args), "configs": out,
                                                       "partial": True}, indent=2, default=float))

    print()
    _print_table(rows)
    table = compare_modes(certs)
    print()
    print(table[["mode", "K", "n_certified", "n_queries", "CRQ", "ci_low", "ci_high",
                 "median_radius_words", "median_radius_share", "n_forward"]].to_string(
        index=False, float_format=lambda x: f"{x:.3f}"))
    total = time.perf_counter() - t_all
    print(f"\ntotal wall time {total:.0f}s ({total / 60:.1f} min) on {os.cpu_count()} CPUs, torch "
          f"threads {__import__('torch').get_num_threads()}; timings: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "configs": out, "radii": rt.to_dict("records"),
            "clusters": info, "modes": table.to_dict("records"), "times": times,
            "total_s": total}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
