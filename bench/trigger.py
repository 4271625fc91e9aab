"""Benchmark: imitation triggers (PAT-style) vs insertion baselines vs PRADA-style substitution.

Setting (one run, every method on the same targets):
  collection   Cranfield (BEIR folder; default ../shared/data/collections/cranfield beside the
               repository)
  victim       the packaged all-MiniLM-L6-v2 bi-encoder reranking BM25 top-100
  targets      hard5 (the last 5 of each list) and easy5 (one random document from each 10-rank
               block of ranks 51..100) on --n-queries (20) seeded queries with 100 candidates
  surrogate    imitation (--surrogate-base glove, the attack job's default for triggers): a
               bag-of-embeddings bi-encoder (rankers.bow: GloVe vectors of the collection's
               words + a linear projection) trained on the victim's rankings of BM25 top-100 of
               100 OTHER queries (10,000 counted victim queries; top25_plus_tail k=25 tail=4,
               label-smoothed RankNet, lr 0.01, batches of 64, early stopping on 20 held-out
               queries; cached under $RANKLAB_CACHE/surrogates). --surrogate-base minilm: the
               MiniLM cross-encoder of bench/attack.py (20 queries x BM25 top-30)
  methods      query-plus (the query inserted once at the start), keyword-stuffing (query terms
               up to --trigger-len words), random-trigger (control, --trigger-len random
               in-domain words), PAT (TriggerAttack, --trigger-len words at the start, search
               sizes below, list adaptation --adapt-epochs 3: a copy of the surrogate fine-tuned
               per query on the victim's ordering the anchor look-up paid for), PAT shared (no
               adaptation), optionally PAT white-box (the victim as surrogate) and PRADA
               (WordSubstitutionAttack with its defaults, wordnet+glove threat)
  metrics      ASR, Boost, T10R (over all targets), inserted words and their share of the
               document, PP (changed or inserted words / words), perplexity ratio adv/orig and
               the inserted span's perplexity under an interpolated Kneser-Ney trigram fitted on
               the collection, spamicity (TF-IDF cosine of the inserted text with the query,
               IDF from the collection; spam@T10: among the targets that reached the top 10),
               victim queries and seconds per target

PAT runs with passage-aware relevance (every candidate trigger is scored inside the target) and
lambda_lm 0.2 by default; ``--relevance query --lambda-coh 0`` gives the reference code's
query-only relevance (one trigger per query, ~20x cheaper on a CPU, Boost 34 / T10R 7 % white-box
on the previous measurement). Its victim queries per target include the anchor look-up (the
victim's top-3 of the 100 listed documents = 100 counted queries once per query, charged to the
query's first target) plus at most --victim-checks rank queries.

    .venv/bin/python bench/trigger.py [--n-queries 20] [--targets easy5 --per-query 1] [--rows ...]

Measured (2026-12-02, quiet 2-core machine, 2 threads, 114 s wall with the victim run cached
(--run-cache) and the surrogate cached; the same 20 easy5 targets as bench/attack.py, one per
query):

    .venv/bin/python bench/trigger.py --targets easy5 --per-query 1 --threads 2 \
        --rows query-plus,keyword-stuffing,random-trigger,pat-shared,pat

    method                   n   ASR    Boost  T10R  sur_T10R  ins   ins%  ppl_ratio  span_ppl  spam  spam@T10  q/target  s/target
    query-plus               20  100.0  64.6   50.0  -         16.7  9.3   1.34       232       1.00  1.00      1         0.1
    keyword-stuffing         20   95.0  37.5    5.0  -          6.0  3.6   1.24       1409      0.74  0.96      1         0.1
    random-trigger           20   55.0   2.2    0.0  -          6.0  3.6   1.36       10973     0.00  -         1         0.1
    PAT (imitation, shared)  20   95.0  29.9   10.0  20.0       6.0  3.6   1.19       863       0.16  0.13      103       3.4
    PAT (imitation)          20  100.0  38.0   10.0   0.0       6.0  3.6   1.10       114       0.25  0.27      103       1.8

``--rows prada`` (WordSubstitutionAttack, wordnet+glove, on the same glove surrogate, 27 s):
ASR 60, Boost 4.7, T10R 0 %, sur_T10R 10 %, PP 5.7 %, 11.7 victim queries and 1.0 s per target.

The surrogate (10,000 victim queries) agrees with the victim on 38 % of the top 10 of the attacked
lists (RBO 0.256); list adaptation raises that to 92 % on each attacked list. Earlier rows on the
same targets and search sizes (1 thread, bench/attack.py beside it): PAT white-box (the victim as
surrogate, ``--rows pat-white-box``) ASR 100, Boost 50.9, T10R 35 %, spam 0.16 (0.21 at T10),
75.5 s/target; PAT through the MiniLM cross-encoder surrogate (``--surrogate-base minilm``,
overlap@10 0.115) ASR 85, Boost 9.8, T10R 0 %.

Why PAT through imitation stays at T10R 10 % (the white-box search reaches 35 %), measured on the
same targets:

- sur_T10R (attack rows' ``surrogate_rank``): the list-adapted surrogate, the faithful one, puts
  none of its own adversarial documents in its top 10 (0 %) while the victim puts 10 % there; the
  shared surrogate 20 % (victim 10 %). A bag-of-embeddings model is moved less by 6 inserted words
  than the transformer victim, so its best triggers are the wrong words for the victim, not too few
  checks of good ones.
- More victim checks do not help: the final beams are near-duplicates; checking the best 1, 3, 5 or
  10 gives T10R 10 % every time (``--beams 10 --n-triggers 10 --victim-checks 10``: Boost 40.7).
- The victim weighs a document's opening words most: the same 20 PAT triggers inserted at the start,
  the sentence boundary nearest the middle or the end put the targets at mean victim rank 41 / 53 /
  61 (``--rows pat --trigger-positions``); ``--position end`` gives query-plus T10R 20 % (50 % at
  the start) and PAT 0 % (10 %). A bag-of-embeddings surrogate with learned position weights (32
  buckets) learns only a mild slope from the victim's rankings (weight 1.34 at the start, ~0.7 at
  the end) and does no better (T10R 10 %, Boost 34.2).
- Teaching the surrogate insertions directly does not help either: 4,000 extra victim queries of
  6-word topical insertions into documents of the attacker's queries (imitation data of the attack's
  own kind) give T10R 5 % adapted, 10 % shared; a contextual surrogate trained from scratch (one
  transformer layer and learned positions over the glove embeddings, the same imitation data, 5.6
  min) reaches overlap@10 0.39 and T10R 5 % adapted, 0 % shared, although the shared one ranks 35 %
  of its own adversarial documents in its top 10 (attackable, but its weaknesses are not the
  victim's).
- Higher agreement does not transfer either: a MiniLM cross-encoder (the victim's pretrained
  encoder, PAT's setting) trained on 100 attacker queries x BM25 top-30 (3,000 victim queries,
  ``train_surrogate(k=10, tail=3, max_pairs=6000, eval_every=60, patience=3)``, 375 steps, 25 min on
  2 cores; the same data as ``--surrogate-base minilm --surrogate-queries 100 --surrogate-candidates
  30 --surrogate-k 10 --surrogate-max-pairs 6000``, whose held-out checks run every 10 steps) agrees
  0.565 on held-out queries (glove: 0.38), yet PAT through it gives ASR 100, Boost 23.1, T10R 0 %
  with sur_T10R 30 %; its triggers carry its own shortcuts ("yahoo", "azerbaijani", "cardinals").
  What the white-box row has and no CPU-trained surrogate here has is the victim's own response to
  inserted words; PAT's published 48.5 % used a BERT surrogate trained on a GPU on far more
  imitation data.
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


def main(argv=None) -> int:
    from ranklab.attack_job import AttackConfig  # the job's defaults (no torch import)

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", nargs="?", default=DEFAULT_DATASET, help="BEIR folder")
    ap.add_argument("--n-queries", type=int, default=20)
    ap.add_argument("--surrogate-base", default="glove",
                    help="imitation surrogate: glove (bag-of-embeddings bi-encoder) or minilm "
                         "(a MiniLM cross-encoder)")
    ap.add_argument("--surrogate-queries", type=int, default=None,
                    help="attacker queries (default per base: rankers.imitation."
                         "IMITATION_DEFAULTS)")
    ap.add_argument("--surrogate-candidates", type=int, default=None,
                    help="BM25 candidates the victim ranks per attacker query (imitation data; "
                         "default per base)")
    ap.add_argument("--surrogate-k", type=int, default=None,
                    help="imitation: top-k of the victim's ranking paired (default per base)")
    ap.add_argument("--surrogate-tail", type=int, default=None,
                    help="imitation: tail negatives per top document (default per base)")
    ap.add_argument("--surrogate-max-pairs", type=int, default=None,
                    help="imitation training groups (default per base)")
    ap.add_argument("--trigger-len", type=int, default=6, help="inserted words (PAT, controls)")
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=16, help="proposals per beam and step")
    ap.add_argument("--perturb-steps", type=int, default=2)
    ap.add_argument("--relevance", default="passage", choices=["query", "passage"])
    ap.add_argument("--position", default=AttackConfig().position,
                    choices=["start", "end", "sentence"],
                    help="where every insertion row inserts (sentence: a seeded sentence "
                         "boundary)")
    ap.add_argument("--lambda-lm", type=float, default=0.2)
    ap.add_argument("--lambda-coh", type=float, default=0.0)
    ap.add_argument("--victim-checks", type=int, default=3,
                    help="victim rank queries per target (PAT's best distinct beams, at most "
                         "--n-triggers)")
    ap.add_argument("--n-triggers", type=int, default=None,
                    help="distinct final triggers kept per target (at most --beams; default: "
                         "TriggerAttack's)")
    ap.add_argument("--adapt-epochs", type=int, default=None,
                    help="PAT list adaptation epochs (default: the attack job's, 3 for glove)")
    ap.add_argument("--window", type=int, default=None,
                    help="surrogate word pieces (PAT; default: the surrogate's own limit)")
    ap.add_argument("--rows", default="query-plus,keyword-stuffing,random-trigger,pat-shared,pat,"
                                      "prada",
                    help="comma list of query-plus, keyword-stuffing, random-trigger, pat (with "
                         "list adaptation), pat-shared (one surrogate for every query), prada, "
                         "pat-white-box (the victim as surrogate: an upper bound)")
    ap.add_argument("--targets", default="mixture", choices=["mixture", "easy5", "hard5"],
                    help="target protocol (mixture: easy5 and hard5)")
    ap.add_argument("--per-query", type=int, default=None,
                    help="targets kept per query and protocol (seeded; default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: on a shared 2-core box spin-waits cost 10x)")
    ap.add_argument("--trigger-positions", action="store_true",
                    help="after each PAT row, insert its triggers at the start, the middle "
                         "sentence boundary and the end of the targets and print the victim's "
                         "mean rank for each (the experiment owner's measurement, no attacker "
                         "query): how much the victim weighs where words stand")
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
    from ranklab.display import print_table as _print_table

    def print_table(rows):
        _print_table(rows, floatfmt="{:.2f}")
        sys.stdout.flush()

    t_all = time.perf_counter()
    col = load_collection(args.dataset)
    victim = load_ranker("minilm")
    cands = col.candidates("bm25", k=100)
    attack_qids, rest = col.split_queries(cands, args.n_queries, seed=args.seed,
                                          min_candidates=100)
    cfg = AttackConfig(dataset=args.dataset, seed=args.seed, first_stage="bm25",
                       surrogate_base=args.surrogate_base,
                       surrogate_queries=args.surrogate_queries,
                       surrogate_candidates=args.surrogate_candidates,
                       surrogate_max_pairs=args.surrogate_max_pairs,
                       surrogate_k=args.surrogate_k, surrogate_tail=args.surrogate_tail)
    sur_qids = sorted(rest[: cfg.imitation_queries()])
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
    need_sur = any(r in ("pat", "pat-shared", "prada") for r in rows_wanted)
    t = time.perf_counter()
    sur, info, agree, prada = None, {}, {"overlap@10": float("nan"), "rbo": float("nan")}, None
    if need_sur:
        sur, info = imitation_surrogate(victim, "minilm", col, sur_qids, **cfg.imitation_options(),
                                        progress=True)
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
                  candidates=args.candidates, position=args.position, relevance=args.relevance,
                  lambda_lm=args.lambda_lm, lambda_coh=args.lambda_coh,
                  perturb_steps=args.perturb_steps, victim_checks=args.victim_checks,
                  **({} if args.n_triggers is None else {"n_triggers": args.n_triggers}),
                  window=args.window, seed=args.seed)
    adapt = (cfg.replace(method="trigger", adapt_epochs=args.adapt_epochs)
             .trigger_adapt_epochs())
    makers = {
        "query-plus": ("query-plus", lambda: InsertionAttack(
            "query-plus", position=args.position, seed=args.seed)),
        "keyword-stuffing": ("keyword-stuffing", lambda: InsertionAttack(
            "keyword-stuffing", max_tokens=args.trigger_len, position=args.position,
            seed=args.seed)),
        "random-trigger": ("random-trigger", lambda: InsertionAttack(
            "random-trigger", trigger_len=args.trigger_len, position=args.position,
            seed=args.seed)),
        "pat": ("PAT (imitation)", lambda: TriggerAttack(
            sur, adapt_epochs=adapt, adapt_lr=cfg.imitation_options()["lr"], **pat_kw)),
        "pat-shared": ("PAT (imitation, shared)", lambda: TriggerAttack(sur, **pat_kw)),
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
            top = sub[sub["adv_rank"] <= 10]
            spam_top = summarize(top, tfidf=tfidf)["spamicity"] if len(top) else float("nan")
            share = sub["wall_s"].sum() / max(fr["wall_s"].sum(), 1e-9)
            table.append({"method": name, "targets": proto, "n": s["n_targets"],
                          "ASR": s["ASR"], "Boost": s["boost"], "T10R": s["T10R"],
                          "T10R_succ": s["T10R_succ"], "sur_T10R": s["surrogate_T10R"],
                          "ins": s["inserted_tokens"],
                          "ins%": s["inserted_share"], "PP%": s["PP"],
                          "ppl_ratio": s["ppl_ratio"], "span_ppl": s["detector_ppl"],
                          "spam": s["spamicity"], "spam@T10": spam_top, "q/target": s["queries_mean"],
                          "s/target": secs * share / max(s["n_targets"], 1),
                          "errors": s["n_errors"]})
        print(f"-- {name}: {len(fr)} targets in {secs:.0f}s", flush=True)
        print_table(table[-len(set(fr["protocol"])):])
        if name.startswith("PAT") and args.trigger_positions:
            print("   the same triggers moved (victim mean rank): " + ", ".join(
                f"{k} {v:.1f}" for k, v in moved_ranks(victim, run, fr).items()), flush=True)
        if name.startswith("PAT"):
            ex = fr.iloc[0]
            print(f"   e.g. qid {ex.qid}: {ex.query!r} -> trigger {ex.substitutions[0][2]!r} "
                  f"rank {ex.orig_rank} -> {ex.adv_rank}", flush=True)
    print()
    print(f"victim MiniLM bi-encoder, BM25 top-100, {len(attack_qids)} queries; surrogate "
          f"overlap@10 {agree['overlap@10']:.2f}; PAT: beams {args.beams}, candidates "
          f"{args.candidates}, len {args.trigger_len}, relevance {args.relevance}, perturb steps "
          f"{args.perturb_steps}, victim checks {args.victim_checks}, list adaptation "
          f"{adapt} epochs, position {args.position}; sur_T10R: targets the surrogate itself "
          "ranks in its top 10 (the transfer gap against T10R)")
    print_table(table)
    print(f"bench wall time {time.perf_counter() - t_all:.0f}s on {args.threads} thread(s)")
    return 0


def moved_ranks(victim, run, fr) -> dict:
    """Mean victim rank (1-based, pessimistic ties, against the fixed list) of each result's
    inserted span placed at the start, at the sentence boundary nearest the middle, and at the
    end of the original target."""
    import numpy as np

    from attacks import new_rank
    from attacks.insertion import insert_at, inserted_spans, sentence_boundaries

    ranks: dict = {"start": [], "middle": [], "end": []}
    for r in fr.itertuples():
        spans = inserted_spans(r.substitutions)
        if not spans:
            continue
        text = r.orig_text
        mid = min(sentence_boundaries(text), key=lambda b: abs(b - len(text) / 2))
        offsets = {"start": 0, "middle": mid, "end": len(text)}
        g = run[(run["qid"] == r.qid) & (run["docno"] != r.docno)]
        others = g["score"].to_numpy()
        s = victim.score(r.query, [insert_at(text, spans[0], o)[0] for o in offsets.values()])
        for k, v in zip(offsets, s):
            ranks[k].append(new_rank(float(v), others))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in ranks.items()}


if __name__ == "__main__":
    sys.exit(main())
