"""Benchmark: word-substitution search strategies (PRADA loop, exact lazy greedy) and TextAttack's
greedy search at the same victim budget, white-box and with an imitation surrogate.

Setting
  collection   Cranfield (BEIR folder; default ../shared/data/collections/cranfield beside the
               repository)
  victim       the packaged all-MiniLM-L6-v2 bi-encoder reranking BM25 top-100 (256 word pieces)
  queries      --n-queries (20) seeded queries with 100 candidates; targets: easy5 (one random
               document from each 10-rank block of ranks 51..100), then --per-query (1, seeded)
               of them per query, to fit a 2-core CPU (--per-query 5 = the full easy5 protocol)
  threat       --threat (counter-fitted: GloVe 6B 50d counter-fitted to the PPDB constraints,
               k=50 neighbours with cosine >= 0.7; stop words protected), --n-candidates (10)
               neighbours per word; the same for every method
  caps         PP <= 10 % of the words (--max-pp), no other word cap; goal: rank <= 10 (every
               method stops once the target reaches the top 10; success = any rank improvement)
  budget       --budget (1000) victim queries per target for every method (white-box greedy
               screens with at most half of it and spends the rest on its steps)
  rows         prada (black box: imitation surrogate's gradients, victim rank feedback),
               prada white-box (the victim's gradients), greedy white-box (the victim's exact
               scores through the Oracle, every scored document counted), greedy black-box
               (screening and lazy greedy on the surrogate, the victim confirms each accepted
               change), TextAttack GreedyWordSwapWIR (victim scores through the Oracle);
               ``surrogate`` only trains the surrogate and prints its time and agreement
               (``--rows surrogate --no-cache`` times the training alone)
  surrogate    rankers.imitation.train_surrogate's defaults on --surrogate-queries (20) OTHER
               queries (BM25 top-30 ranked by the victim, top25_plus_tail k=6 tail=3, <= 640
               pairs, 128 word pieces, lr 3e-4, early stopping on 4 held-out queries), cached by
               its inputs under $RANKLAB_CACHE/surrogates

Prints the threat models' neighbourhood statistics on Cranfield's frequent words, the
surrogate's training time and agreement, one table (ASR, Boost, T10R, T50R in %; words
changed; victim queries, surrogate passes and seconds per target; share of the document inside
the truncation window) and the share of the white-box greedy Boost kept by the surrogate.

    .venv/bin/python bench/attack.py [--n-queries 20] [--per-query 1] [--budget 1000] [--rows ...]
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATASET = str(Path(__file__).resolve().parents[2] / "shared/data/collections/cranfield")
ROWS = ("greedy-wb", "textattack", "prada-wb", "greedy", "prada", "surrogate")


def frequent_words(col, n: int = 1000) -> list[str]:
    """The ``n`` non-stop words of most documents (lower-case, alphabetic)."""
    from attacks.stopwords import STOPWORDS

    df = Counter()
    for t in col.documents["text"]:
        df.update({w for w in re.findall(r"[a-z]+", str(t).lower()) if w not in STOPWORDS})
    return [w for w, _ in df.most_common(n)]


def main(argv=None) -> int:
    from ranklab.attack_job import AttackConfig  # the job's defaults (no torch import)

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=DEFAULT_DATASET, help="BEIR folder")
    ap.add_argument("--n-queries", type=int, default=20, help="attacked queries")
    ap.add_argument("--per-query", type=int, default=1, help="easy5 targets kept per query")
    ap.add_argument("--surrogate-queries", type=int, default=20)
    ap.add_argument("--budget", type=int, default=1000, help="victim queries per target")
    ap.add_argument("--threat", default="counter-fitted")
    ap.add_argument("--compare-threat", default="wordnet+glove",
                    help="threat model whose neighbourhood statistics are printed alongside")
    ap.add_argument("--n-candidates", type=int, default=10, help="neighbours per word")
    ap.add_argument("--max-pp", type=float, default=0.1)
    ap.add_argument("--rescore", type=int, default=10, help="lazy greedy re-scores per step")
    ap.add_argument("--goal-k", type=int, default=10)
    ap.add_argument("--competitors-k", type=int, default=30, help="PRADA's hinge competitors")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {ROWS}")
    ap.add_argument("--surrogate-max-pairs", type=int, default=AttackConfig.surrogate_max_pairs)
    ap.add_argument("--surrogate-candidates", type=int, default=AttackConfig.surrogate_candidates,
                    help="BM25 candidates the victim ranks per attacker query (imitation data)")
    ap.add_argument("--surrogate-max-length", type=int, default=AttackConfig.surrogate_max_length)
    ap.add_argument("--max-screen", type=int, default=None,
                    help="most candidates screened per target (greedy; None: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run-cache", default=None,
                    help="pickle of the victim's run (written on the first run, read after)")
    ap.add_argument("--no-cache", action="store_true", help="retrain the surrogate")
    ap.add_argument("--out", default=None, help="JSONL with every result row (appended per method)")
    args = ap.parse_args(argv)
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = sorted(set(rows_wanted) - set(ROWS))
    if bad:
        ap.error(f"unknown rows {bad}; choose from {ROWS}")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from attacks.base import sample_targets
    from attacks.metrics import summarize
    from attacks.threat import load_threat_model, neighbourhood_stats
    from attacks.word_substitution import WordSubstitutionAttack
    from rankers import Oracle, load_ranker
    from ranklab.attack_job import imitation_surrogate
    from ranklab.display import print_table as _print_table
    from ranklab.collections import load_collection

    t_all = time.perf_counter()
    col = load_collection(args.dataset)
    victim = load_ranker("minilm")

    # -- threat models: neighbourhood statistics on the collection's frequent words
    threat = load_threat_model(args.threat)
    freq = frequent_words(col)
    stats = []
    for spec in dict.fromkeys([args.compare_threat, args.threat]):
        st = neighbourhood_stats(load_threat_model(spec), freq)
        stats.append({"threat": spec, "words": st["n_words"],
                      "with substitute %": 100 * st["share_with_substitute"],
                      "neighbours/word": st["mean_neighbours"],
                      "neighbours/word (if any)": st["mean_neighbours_if_any"]})
    print(f"neighbourhoods of {col.name}'s {len(freq)} most frequent non-stop words:")
    _print_table(stats, floatfmt="{:.2f}")

    # -- queries, the victim's lists, targets
    cands = col.candidates("bm25", k=100)
    attack_qids, rest = col.split_queries(cands, args.n_queries, seed=args.seed,
                                          min_candidates=100)
    sur_qids = sorted(rest[: args.surrogate_queries])
    t = time.perf_counter()
    run = None
    if args.run_cache and Path(args.run_cache).is_file():
        run = pickle.loads(Path(args.run_cache).read_bytes())
        if sorted(run["qid"].unique()) != attack_qids:
            run = None
    if run is None:
        run = victim.transform(cands[cands["qid"].isin(attack_qids)])
        if args.run_cache:
            Path(args.run_cache).write_bytes(pickle.dumps(run))
    print(f"\n{col.name}: {len(col.documents)} docs; victim run on {len(attack_qids)} queries x "
          f"100 in {time.perf_counter() - t:.0f}s", flush=True)
    targets = sample_targets(run, "easy5", seed=args.seed)
    pick_rng = np.random.default_rng(args.seed)
    keep = []
    for _, g in targets.groupby("qid", sort=True):
        keep += sorted(pick_rng.choice(g.index.to_numpy(), size=min(args.per_query, len(g)),
                                       replace=False).tolist())
    targets = targets.loc[keep].reset_index(drop=True)
    print(f"targets: {len(targets)} (easy5, {args.per_query} per query), ranks "
          f"{sorted(targets['rank'].tolist())}", flush=True)

    # -- the imitation surrogate (the attack job's defaults), trained when a row needs it
    sur_box: dict = {}

    def surrogate():
        if "model" in sur_box:
            return sur_box["model"]
        t = time.perf_counter()
        cfg = AttackConfig(dataset=args.dataset, seed=args.seed, first_stage="bm25",
                           surrogate_candidates=args.surrogate_candidates,
                           surrogate_max_pairs=args.surrogate_max_pairs,
                           surrogate_max_length=args.surrogate_max_length)
        sur, info = imitation_surrogate(victim, "minilm", col, sur_qids, **cfg.imitation_options(),
                                        progress=True, cache=not args.no_cache)
        a = info.get("agreement") or {}
        print(f"surrogate: {info['n_groups']} pairs from {len(info['qids'])} queries, "
              f"{info['steps']}/{info['planned_steps']} steps"
              f"{' (stopped early)' if info.get('stopped_early') else ''}, "
              f"{info['victim_queries']} victim queries, trained in {info['seconds']:.0f}s"
              f"{' (loaded from cache now)' if info.get('cached') else ''}; agreement on "
              f"{len(info.get('holdout_qids', []))} held-out queries: overlap@10 "
              f"{a.get('overlap@10', float('nan')):.3f}, RBO(0.7) {a.get('rbo', float('nan')):.3f}"
              f" (wall {time.perf_counter() - t:.0f}s)", flush=True)
        sur_box.update(model=sur, info=info)
        return sur

    common = dict(max_words=None, max_pp=args.max_pp, query_budget=args.budget, goal="topk",
                  goal_k=args.goal_k, seed=args.seed, n_candidates=args.n_candidates)
    greedy_kw = dict(rescore=args.rescore, max_screen=args.max_screen)
    attacks = {
        "prada": lambda: (WordSubstitutionAttack(surrogate(), threat, search="prada",
                                                 competitors_k=args.competitors_k, **common),
                          Oracle(victim, access="rank")),
        "prada-wb": lambda: (WordSubstitutionAttack(victim, threat, search="prada",
                                                    competitors_k=args.competitors_k, **common),
                             Oracle(victim, access="rank")),
        "greedy-wb": lambda: (WordSubstitutionAttack(None, threat, search="greedy",
                                                     white_box=True, **greedy_kw, **common),
                              Oracle(victim, access="score")),
        "greedy": lambda: (WordSubstitutionAttack(surrogate(), threat, search="greedy",
                                                  **greedy_kw, **common),
                           Oracle(victim, access="rank")),
    }
    label = {"prada": "prada (surrogate)", "prada-wb": "prada white-box",
             "greedy-wb": "greedy white-box", "greedy": "greedy (surrogate)",
             "textattack": "textattack greedy-wir"}
    frames: dict = {}
    table: list = []

    def summary_row(name, fr):
        s = summarize(fr, encoder=victim)
        return {"method": name, "targets": s["n_targets"], "ASR": s["ASR"],
                "Boost": s["boost"], "T10R": s["T10R"], "T50R": s.get("T50R"),
                "words": s["n_changed"], "PP%": s["PP"], "sim": s["similarity"],
                "victim q": s["queries_mean"], "q max": s["queries_max"],
                "sur. passes": s.get("surrogate_passes_mean", 0.0),
                "s/target": s["wall_s_mean"],
                "window": float(fr["window_share"].mean()) if "window_share" in fr
                else float("nan"), "errors": s["n_errors"]}

    for name in rows_wanted:
        t = time.perf_counter()
        if name == "surrogate":   # training time and agreement only (with --no-cache: timed now)
            surrogate()
            continue
        if name == "textattack":
            from attacks.textattack_backend import TextAttackWordSubstitution, import_textattack

            import_textattack()
            c = {k: v for k, v in common.items() if k != "max_words"}
            atk = TextAttackWordSubstitution(threat, search="greedy-wir", max_words=10**6, **c)
            oracle = Oracle(victim, access="score")
        else:
            atk, oracle = attacks[name]()
        fr = atk.run(oracle, col, targets, run=run, errors="record", progress=True)
        if args.out:  # appended per method, so a cut-short run keeps what finished
            with open(args.out, "a") as f:
                for r in fr.to_dict("records"):
                    f.write(json.dumps({**r, "bench_row": label[name]}, default=str) + "\n")
        frames[label[name]] = fr
        table.append(summary_row(label[name], fr))
        print(f"\n{label[name]}: {time.perf_counter() - t:.0f}s", flush=True)
        _print_table(table, floatfmt="{:.2f}")
        sys.stdout.flush()

    by = {r["method"]: r for r in table}
    wb, bb = by.get(label["greedy-wb"]), by.get(label["greedy"])
    if wb and bb and wb["Boost"]:
        print(f"\nshare of the white-box greedy Boost kept by the surrogate: "
              f"{bb['Boost'] / wb['Boost']:.2f} ({bb['Boost']:.1f} / {wb['Boost']:.1f}); "
              f"T10R {bb['T10R']:.0f}% vs {wb['T10R']:.0f}%")
    if "info" in sur_box:
        print(f"surrogate training: {sur_box['info']['seconds']:.0f}s (as trained; a cached "
              "model reports its original time)")
    print(f"bench wall time {time.perf_counter() - t_all:.0f}s on {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
