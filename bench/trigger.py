"""Benchmark: imitation triggers (PAT-style) vs insertion baselines vs PRADA-style substitution.

Setting (one run, every method on the same targets):
  collection   Cranfield (BEIR folder; default ../shared/data/collections/cranfield beside the
               repository)
  victim       the packaged all-MiniLM-L6-v2 bi-encoder reranking BM25 top-100
  targets      hard5 (the last 5 of each list) and easy5 (one random document from each 10-rank
               block of ranks 51..100) on --n-queries (20) seeded queries with 100 candidates
  surrogate    imitation: a MiniLM cross-encoder trained on the victim's rankings of
               --surrogate-queries (20) OTHER queries (recipe top25_plus_tail, k=6, tail=3,
               label-smoothed RankNet, 1 epoch, lr 1e-4, 192 word pieces: the size of
               bench/attack.py, cached under $RANKLAB_CACHE/surrogates)
  methods      query-plus (the query inserted once at the start), keyword-stuffing (query terms
               up to --trigger-len words), random-trigger (control, --trigger-len random
               in-domain words), PAT (TriggerAttack, --trigger-len words at the start, search
               sizes below), optionally PAT white-box (the victim as surrogate) and PRADA
               (WordSubstitutionAttack with its defaults, wordnet+glove threat)
  metrics      ASR, Boost, T10R (over all targets), inserted words and their share of the
               document, PP (changed or inserted words / words), perplexity ratio adv/orig and
               the inserted span's perplexity under an interpolated Kneser-Ney trigram fitted on
               the collection, spamicity (TF-IDF cosine of the inserted text with the query,
               IDF from the collection), victim queries and seconds per target

PAT runs with --relevance query and lambda_coh 0 by default (the reference code's query-only
relevance; the trigger is then the same for every target of a query and is searched once per
query): passage-aware relevance scores every candidate trigger inside each target document
(~20x the cost on a CPU). Its victim queries per target include the anchor look-up (the
victim's top-3 of the 100 listed documents = 100 counted queries once per query, charged to the
query's first target) plus at most --victim-checks rank queries.

    .venv/bin/python bench/trigger.py [--n-queries 20] [--rows pat,query-plus,...]

Measured (2026-12-01, 2-core machine shared with 4 other agents, load ~10; two processes:
``--rows query-plus,keyword-stuffing,random-trigger,pat-white-box`` and ``--rows pat,prada``,
sharing ``--run-cache``; victim run 13 min, imitation 22 min, PAT 20 queries ~12 min per row).
Targets: 100 easy5 + 87 hard5 (mixture: 13 hard5 ranks coincide with easy5 picks).

    method            targets  ASR    Boost  T10R  ins   ins%  ppl_ratio  span_ppl  spam  q/target
    query-plus        easy5    100.0  61.8   57.0  16.7  8.7   1.32       232       1.00  1
    query-plus        hard5    100.0  69.2   27.6  16.7  7.9   1.28       227       1.00  1
    keyword-stuffing  easy5     99.0  36.7   10.0   6.0  3.4   1.21       1409      0.74  1
    keyword-stuffing  hard5    100.0  31.0    1.1   6.0  3.1   1.18       1375      0.74  1
    random-trigger    easy5     49.0   1.4    0.0   6.0  3.4   1.33       11968     0.00  1
    random-trigger    hard5     42.5   1.5    0.0   6.0  3.1   1.30       11867     0.00  1
    PAT white-box     easy5    100.0  34.3    7.0   6.0  3.4   1.11       324       0.33  23
    PAT white-box     hard5     98.9  30.6    0.0   6.0  3.1   1.10       315       0.30  3
    PAT (imitation)   easy5     88.0  17.5    0.0   6.0  3.4   1.05       43        0.11  23
    PAT (imitation)   hard5     86.2  11.8    0.0   6.0  3.1   1.05       41        0.11  3
    PRADA (imitation) easy5     68.0   4.4    0.0   0.0  0.0   1.17       -         -     10
    PRADA (imitation) hard5     34.5   1.1    0.0   0.0  0.0   1.03       -         -     10

(PRADA changes 1.0 % / 0.2 % of the words; seconds per target: query-plus 1.0, PAT white-box
8.1 / 1.9, PAT imitation 5.3 / 0.5 (the per-query search is charged to the first, easy5,
target), PRADA 3.2 / 3.3. PAT's easy5 q/target includes the 100 anchor queries per query.)

The issue's target (PAT T10R >= 30 % on easy5 with <= 6 words) is NOT reached. Measured reasons:
the victim mean-pools ~190-word abstracts, so 6 words are 3.4 % of the text (query-plus needs
16.7 words for 57 %; the best 6 query words, keyword stuffing, reach 10 %; T10R halves on the
longer half of the documents for every method); the imitation surrogate agrees poorly with the
victim (overlap@10 0.195) and proposes generic phrases ("an approximate theory of the ..."),
while the victim itself as surrogate gives Boost 34 (T10R 7 %, at spamicity 0.33 vs 0.74 for
keyword stuffing and 1.0 for query-plus); the LM term spends 1-2 of the 6 words on function
words; search sizes are CPU-bound (5 beams x 16 proposals, 2 perturbation steps, query-only
relevance, 3 victim checks) against the paper's 10 x 128, 5 steps and 5 checks on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATASET = str(Path(__file__).resolve().parents[2] / "shared/data/collections/cranfield")


def print_table(rows: list[dict], floatfmt: str = "{:.2f}") -> None:
    if not rows:
        return
    cols = list(rows[0])
    cells = [[c for c in cols]] + [[floatfmt.format(r[c]) if isinstance(r[c], float) else str(r[c])
                                    for c in cols] for r in rows]
    w = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for j, row in enumerate(cells):
        print("  ".join(x.rjust(w[i]) if j else x.ljust(w[i]) for i, x in enumerate(row)))
    sys.stdout.flush()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=DEFAULT_DATASET, help="BEIR folder")
    ap.add_argument("--n-queries", type=int, default=20)
    ap.add_argument("--surrogate-queries", type=int, default=20)
    ap.add_argument("--trigger-len", type=int, default=6, help="inserted words (PAT, controls)")
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=16, help="proposals per beam and step")
    ap.add_argument("--perturb-steps", type=int, default=2)
    ap.add_argument("--relevance", default="passage", choices=["query", "passage"])
    ap.add_argument("--lambda-lm", type=float, default=0.2)
    ap.add_argument("--lambda-coh", type=float, default=0.0)
    ap.add_argument("--victim-checks", type=int, default=3)
    ap.add_argument("--window", type=int, default=None,
                    help="surrogate word pieces (PAT; default: the surrogate's own limit)")
    ap.add_argument("--rows", default="query-plus,keyword-stuffing,random-trigger,pat,prada",
                    help="comma list of query-plus, keyword-stuffing, random-trigger, pat, prada, "
                         "pat-white-box (the victim as surrogate: an upper bound)")
    ap.add_argument("--targets", default="mixture", choices=["mixture", "easy5", "hard5"],
                    help="target protocol (mixture: easy5 and hard5)")
    ap.add_argument("--per-query", type=int, default=None,
                    help="targets kept per query and protocol (seeded; default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: on a shared 2-core box spin-waits cost 10x)")
    ap.add_argument("--out", default=None, help="JSONL with every result row (appended)")
    ap.add_argument("--run-cache", default=None,
                    help="pickle of the victim's run (written once, reused by reruns)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from attacks import InsertionAttack, TriggerAttack, sample_targets, summarize
    from attacks.lm import NGramLM
    from attacks.metrics import TfIdf
    from rankers import Oracle, load_ranker
    from rankers.imitation import run_agreement
    from ranklab.attack_job import imitation_surrogate
    from ranklab.collections import load_collection

    t_all = time.perf_counter()
    col = load_collection(args.dataset)
    victim = load_ranker("minilm")
    cands = col.candidates("bm25", k=100)
    attack_qids, rest = col.split_queries(cands, args.n_queries, seed=args.seed,
                                          min_candidates=100)
    sur_qids = sorted(rest[: args.surrogate_queries])
    t = time.perf_counter()
    cache = Path(args.run_cache) if args.run_cache else None
    if cache is not None and cache.is_file():
        import pandas as pd

        run = pd.read_pickle(cache)
        assert sorted(run["qid"].unique()) == attack_qids, "stale --run-cache file"
    else:
        run = victim.transform(cands[cands["qid"].isin(attack_qids)])
        if cache is not None:
            run.to_pickle(cache)
    print(f"{col.name}: {len(col.documents)} docs; victim run on {len(attack_qids)} queries x 100 "
          f"in {time.perf_counter() - t:.0f}s", flush=True)
    targets = sample_targets(run, args.targets, seed=args.seed)
    if args.per_query is not None:
        pick = np.random.default_rng(args.seed)
        keep = []
        for _, g in targets.groupby(["qid", "protocol"], sort=True):
            keep += sorted(pick.choice(g.index.to_numpy(), size=min(args.per_query, len(g)),
                                       replace=False).tolist())
        targets = targets.loc[sorted(keep)].reset_index(drop=True)
    print(f"targets: {len(targets)} ({args.targets}"
          f"{'' if args.per_query is None else f', {args.per_query} per query'})", flush=True)
    lm = NGramLM.from_collection(col)
    tfidf = TfIdf.from_collection(col)

    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    need_sur = any(r in ("pat", "prada") for r in rows_wanted)
    t = time.perf_counter()
    sur, info, agree, prada = None, {}, {"overlap@10": float("nan"), "rbo": float("nan")}, None
    if need_sur:
        sur, info = imitation_surrogate(
            victim, "minilm", col, sur_qids, recipe="top25_plus_tail", k=6, tail=3, base="minilm",
            loss="ranknet", epochs=1, seed=args.seed, first_stage="bm25", candidates_k=30,
            max_pairs=640, lr=3e-4, max_length=128, progress=True)
        if "prada" in rows_wanted:
            from attacks import WordSubstitutionAttack

            # PRADA with its defaults; scoring the lists for the agreement primes its
            # competitor cache (it would score the same top-99 documents anyway)
            prada = WordSubstitutionAttack(sur, "wordnet+glove", seed=args.seed)
        agree = run_agreement(run, prada.surrogate_scores if prada is not None else sur.score)
        print(f"surrogate: {info['n_groups']} pairs, {info['victim_queries']} victim queries, "
              f"{time.perf_counter() - t:.0f}s{' (cached)' if info.get('cached') else ''}; "
              f"agreement on the attack queries: overlap@10 {agree['overlap@10']:.3f}, "
              f"RBO {agree['rbo']:.3f}", flush=True)

    pat_kw = dict(lm="ngram", trigger_len=args.trigger_len, beams=args.beams,
                  candidates=args.candidates, position="start", relevance=args.relevance,
                  lambda_lm=args.lambda_lm, lambda_coh=args.lambda_coh,
                  perturb_steps=args.perturb_steps, victim_checks=args.victim_checks,
                  window=args.window, seed=args.seed)
    makers = {
        "query-plus": ("query-plus", lambda: InsertionAttack("query-plus", seed=args.seed)),
        "keyword-stuffing": ("keyword-stuffing", lambda: InsertionAttack(
            "keyword-stuffing", max_tokens=args.trigger_len, seed=args.seed)),
        "random-trigger": ("random-trigger", lambda: InsertionAttack(
            "random-trigger", trigger_len=args.trigger_len, seed=args.seed)),
        "pat": ("PAT (imitation)", lambda: TriggerAttack(sur, **pat_kw)),
        "prada": ("PRADA (imitation)", lambda: prada),
        "pat-white-box": ("PAT white-box", lambda: TriggerAttack(victim, **pat_kw)),
    }
    unknown = [r for r in rows_wanted if r not in makers]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; use {list(makers)}")
    methods = [makers[r] for r in rows_wanted]
    table, rows = [], []
    for name, make in methods:
        attack = make()
        t = time.perf_counter()
        fr = attack.run(Oracle(victim, access="rank"), col, targets, run=run, errors="record",
                        progress=True)
        secs = time.perf_counter() - t
        new_rows = [{**r, "bench_row": name} for r in fr.to_dict("records")]
        rows += new_rows
        if args.out:  # appended per method, so a cut-short run keeps what finished
            with open(args.out, "a") as f:
                for r in new_rows:
                    f.write(json.dumps(r, default=str) + "\n")
        for proto in sorted(set(fr["protocol"]), key=["easy5", "hard5"].index):
            sub = fr[fr["protocol"] == proto]
            s = summarize(sub, fluency=lm, tfidf=tfidf)
            share = sub["wall_s"].sum() / max(fr["wall_s"].sum(), 1e-9)
            table.append({"method": name, "targets": proto, "n": s["n_targets"],
                          "ASR": s["ASR"], "Boost": s["boost"], "T10R": s["T10R"],
                          "T10R_succ": s["T10R_succ"], "ins": s["inserted_tokens"],
                          "ins%": s["inserted_share"], "PP%": s["PP"],
                          "ppl_ratio": s["ppl_ratio"], "span_ppl": s["detector_ppl"],
                          "spam": s["spamicity"], "q/target": s["queries_mean"],
                          "s/target": secs * share / max(s["n_targets"], 1),
                          "errors": s["n_errors"]})
        print(f"-- {name}: {len(fr)} targets in {secs:.0f}s", flush=True)
        print_table(table[-len(set(fr["protocol"])):])
        if name.startswith("PAT"):
            ex = fr.iloc[0]
            print(f"   e.g. qid {ex.qid}: {ex.query!r} -> trigger {ex.substitutions[0][2]!r} "
                  f"rank {ex.orig_rank} -> {ex.adv_rank}", flush=True)
    print()
    print(f"victim MiniLM bi-encoder, BM25 top-100, {len(attack_qids)} queries; surrogate "
          f"overlap@10 {agree['overlap@10']:.2f}; PAT: beams {args.beams}, candidates "
          f"{args.candidates}, len {args.trigger_len}, relevance {args.relevance}, perturb steps "
          f"{args.perturb_steps}, victim checks {args.victim_checks}")
    print_table(table)
    print(f"bench wall time {time.perf_counter() - t_all:.0f}s on {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
