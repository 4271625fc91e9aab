"""Throughput of the lab's scoring path against a plain transformers forward loop.

Both sides score the same (query, document) pairs of a collection's BM25 candidates with the same
model, fp32, on the CPU, in one process; the lab's path sorts by length, pads per batch and runs
under ``torch.inference_mode()``, the plain loop tokenizes batches in input order with
``padding=True`` under ``torch.no_grad()``. Printed: pairs/s of each and the ratio lab/plain
(>= 0.95 wanted), then the bf16 option's speed-up over the lab's fp32 path and the largest absolute
score difference bf16 causes. Ratios, not absolute times, are the result (machines are noisy).

    python bench/scoring.py [--dataset demo|PATH] [--pairs 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def best_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def plain_cross(model, tok, queries, docs, bs, max_length):
    out = []
    with torch.no_grad():
        for i in range(0, len(queries), bs):
            enc = tok(queries[i:i + bs], docs[i:i + bs], padding=True, truncation="only_second",
                      max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits[:, 0])
    return torch.cat(out).numpy()


def plain_bi(model, tok, queries, docs, bs, max_length):
    def enc_all(texts):
        embs = []
        with torch.no_grad():
            for i in range(0, len(texts), bs):
                enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1)
                embs.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(embs)

    uq = list(dict.fromkeys(queries))
    ud = list(dict.fromkeys(docs))
    qe, de = enc_all(uq), enc_all(ud)
    qi = {q: i for i, q in enumerate(uq)}
    di = {d: i for i, d in enumerate(ud)}
    return (qe[[qi[q] for q in queries]] * de[[di[d] for d in docs]]).sum(-1).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from rankers.encoders import BiEncoder
    from rankers.loading import minilm_path
    from rankers.training import new_cross_encoder
    from ranklab.collections import load_collection

    torch.manual_seed(0)
    col = load_collection(args.dataset)
    run = col.candidates("bm25", k=100)
    run = run.sample(n=min(args.pairs, len(run)), random_state=0)
    queries, docs = run["query"].tolist(), run["text"].tolist()
    print(f"{len(queries)} pairs from {col.name}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")

    rows = []
    ce = new_cross_encoder("minilm", seed=0, batch_size=args.batch_size, max_length=256)
    bi = BiEncoder(minilm_path(), batch_size=args.batch_size)
    for label, lab in (("cross-encoder", ce), ("bi-encoder", bi)):
        if label == "cross-encoder":
            plain = lambda: plain_cross(lab.model, lab.tokenizer, queries, docs, args.batch_size, lab.max_length)  # noqa: E731
        else:
            plain = lambda: plain_bi(lab.model, lab.tokenizer, queries, docs, args.batch_size, lab.max_length)  # noqa: E731

        def lab_fn(r=lab):
            if hasattr(r, "_emb_cache"):
                r._emb_cache.clear()  # measure scoring, not the cache
            return r.score_pairs(queries, docs)

        # interleave the two sides so background load hits both alike; keep the best of each
        t_plain = t_lab = float("inf")
        for _ in range(args.repeats):
            tp, s_plain = best_time(plain, 1)
            tl, s_lab = best_time(lab_fn, 1)
            t_plain, t_lab = min(t_plain, tp), min(t_lab, tl)
        diff32 = float(np.max(np.abs(s_plain - s_lab)))
        # bf16: same weights, cast
        lab.model.to(torch.bfloat16)
        t_bf16, s_bf16 = best_time(lab_fn, args.repeats)
        lab.model.to(torch.float32)
        rows.append((label, len(queries) / t_plain, len(queries) / t_lab, t_plain / t_lab, diff32,
                     t_lab / t_bf16, float(np.max(np.abs(s_bf16 - s_lab))),
                     float(np.std(s_lab))))
    print(f"{'model':14} {'plain pairs/s':>13} {'lab pairs/s':>11} {'lab/plain':>9} {'max|d| fp32':>11} "
          f"{'bf16 speed-up':>13} {'bf16 max|d|':>11} {'score std':>9}")
    for r in rows:
        print(f"{r[0]:14} {r[1]:13.1f} {r[2]:11.1f} {r[3]:9.2f} {r[4]:11.2e} {r[5]:13.2f} {r[6]:11.2e} {r[7]:9.3f}")


if __name__ == "__main__":
    main()
