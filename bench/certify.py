"""Cost of certification: certdr vs rigorous vs adaptive, side by side in one run.

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

DEFAULT_PATH = "/work/shared/data/collections/cranfield"


def _crq(cert, K):
    row = cert.crq[cert.crq["K"] == K]
    return float(row["CRQ"].iloc[0]) if len(row) else float("nan")


def main(argv=None) -> int:
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
    from ranklab.certify_job import CenteredRanker, default_temperature, symmetric_closure
    from ranklab.cli import _print_table, _select_queries, ranker_for
    from ranklab.collections import load_collection

    t_all = time.perf_counter()
    ks = [K for K in (1, 3, 5) if K < args.k]
    col = _select_queries(load_collection(args.path), args.queries, args.seed)
    cands = col.candidates("bm25", k=args.k)
    kw = {} if args.dtype == "fp32" else {"dtype": args.dtype}
    base = ranker_for(args.ranker, col, **kw)
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
        fresh = ranker_for(args.ranker, col, **kw)  # empty embedding cache
        return SmoothedRanker(CenteredRanker(fresh, center), sets, n_samples=args.samples,
                              seed=args.seed, temperature=T)

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


if __name__ == "__main__":
    sys.exit(main())
