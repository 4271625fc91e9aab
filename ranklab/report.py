"""The certification report of a ranker: HTML (self-contained), Markdown and JSON.

:func:`write_report` turns a :class:`defenses.certify.Certificate` plus what surrounds it (what
was certified, clean effectiveness, optional attack results) into three files with the same
numbers:

* ``report.html``: one self-contained page (CSS inline, figures embedded as base64 PNG), readable
  in any browser without network access;
* ``report.md``: the same sections as Markdown, figures linked from ``figures/*.png``;
* ``report.json``: ``{"summary", "meta", "versions", "clean", "crq", "per_query", "certificate",
  "attack", "taxonomy", "figures"}`` at full precision. Infinite margins (``K >= m``: nothing
  outside the top K, trivially certified) are written as ``null`` with ``trivial: true``.

Sections: what was certified (ranker, collection, threat model and its fingerprint, alpha,
samples, seeds, versions); clean effectiveness of the base and the smoothed ranker; the CRQ@K
curve; the margin and radius distributions; a per-query table; attack outcomes on certified vs
uncertified lists with the soundness check (a certified list broken by an attack would mean a bug
or an alpha-event, and the report says so loudly); placement on the robustness taxonomy of
"Are Neural Ranking Models Robust?" where the data allows.

Attack results (the attack-results frame, a list of row dicts, or a ``.jsonl``/``.csv`` path) must
rank targets against the SAME lists the certificate speaks about: the smoothed ranker's lists of
the certified queries (``orig_rank``/``adv_rank`` 1-based, other documents' scores fixed). A target
counts at cut-off K when ``orig_rank > K``; it breaks a certified list when ``adv_rank <= K``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import platform
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["write_report", "build_report_data", "attack_outcome", "load_attack_results",
           "versions", "wilson_interval", "compare_modes", "TAXONOMY"]

#: The five robustness tasks of "Are Neural Ranking Models Robust?" (Wu et al.).
TAXONOMY = (
    ("iid", "IID performance variance"),
    ("ood-query", "OOD generalization: new query types"),
    ("ood-corpus", "OOD generalization: new corpora"),
    ("retrieval-attack", "Defense against retrieval attacks"),
    ("ranking-attack", "Defense against ranking attacks"),
)

_PRIMARY_MEASURE = "nDCG@10"


# -- helpers -----------------------------------------------------------------------------------
def versions() -> dict:
    """Versions of Python, the platform and the lab's main dependencies (strings)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("ranklab", "torch", "transformers", "numpy", "pandas", "scipy", "ir-measures",
                "bm25s", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _num(x):
    """JSON-safe number: numpy scalars to Python, NaN/inf to None."""
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return [_jsonable(r) for r in obj.to_dict("records")]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.generic, float, int, bool)) or obj is None:
        return _num(obj)
    if isinstance(obj, (str, Path)):
        return str(obj)
    return str(obj)


def _fmt(x, nd: int = 4) -> str:
    """Display form of a number: 4 decimals, '∞' for inf, '—' for missing."""
    if x is None:
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "—"
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        return f"{x:.{nd}f}"
    return str(x)


def _pct(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a share ``k / n`` (default 95 %); ``(nan, nan)`` for ``n = 0``.

    Used for CRQ@K over queries: the queries are the sample, a list certified or not the outcome.
    """
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    d = 1.0 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    lo = 0.0 if k <= 0 else max(0.0, c - h)  # exact ends: rounding must not exclude 0 or 1
    hi = 1.0 if k >= n else min(1.0, c + h)
    return lo, hi


def _radius_stats(sub: pd.DataFrame) -> dict:
    """Median and quartiles (lower interpolation: always a radius some list has) of the
    certified radii (words, share) of non-trivial lists; lists not certified even without an
    attack count as -1, lists certified whatever the number of changed words as ``inf``
    (written ``null`` in JSON)."""
    nt = sub[~sub["trivial"]] if "trivial" in sub else sub
    out = {}
    for col in ("radius_words", "radius_share"):
        v = nt[col].dropna() if col in nt else pd.Series(dtype=float)
        for name, q in (("median", 0.5), ("q25", 0.25), ("q75", 0.75)):
            out[f"{name}_{col}"] = _num(v.quantile(q, interpolation="lower")) if len(v) else None
    return out


def compare_modes(certificates: Mapping[str, object], ks: Iterable[int] | None = None,
                  clean: Mapping[str, Mapping] | None = None, z: float = 1.959963984540054
                  ) -> pd.DataFrame:
    """Smoothing modes side by side on the same lists: one row per (mode, K).

    ``certificates``: name -> :class:`defenses.certify.Certificate` (e.g. ``{"synonym
    (published)": c1, "synonym (clustered)": c2, "mask keep=0.05": c3}``). Columns: ``mode, K,
    n_queries, n_certified, CRQ, ci_low, ci_high`` (Wilson interval over queries), the median and
    quartiles of the certified radius in words and as a share (:func:`_radius_stats`),
    ``smoothing`` (synonym / mask), ``R``, ``r_share``, ``n_forward`` and, from ``clean``
    (name -> {measure: value}), those measures. Raises ValueError when the certificates are not
    about the same lists (same queries, same documents per query): modes must be compared on the
    same lists.
    """
    certs = dict(certificates)
    if not certs:
        raise ValueError("compare_modes needs at least one certificate")
    ref_name, ref = next(iter(certs.items()))

    def lists(c):
        d = c.docs.astype({"qid": str, "docno": str})
        return {q: frozenset(g["docno"]) for q, g in d.groupby("qid")}

    ref_lists = lists(ref)
    for name, c in certs.items():
        if lists(c) != ref_lists:
            raise ValueError(f"certificates {ref_name!r} and {name!r} are not about the same lists "
                             "(queries or candidate documents differ); certify every mode on the "
                             "same run")
    rows = []
    for name, c in certs.items():
        f = c.frame
        per_q = f.drop_duplicates("qid")
        for K in sorted(int(k) for k in (ks or f["K"].unique())):
            sub = f[f["K"] == K]
            n, k = int(sub["qid"].nunique()), int(sub["certified"].sum())
            lo, hi = wilson_interval(k, n, z)
            rows.append({"mode": name, "K": K, "n_queries": n, "n_certified": k,
                         "n_trivial": int(sub["trivial"].sum()),
                         "CRQ": k / n if n else math.nan, "ci_low": lo, "ci_high": hi,
                         **_radius_stats(sub), "smoothing": c.params.get("smoothing"),
                         "R": c.params.get("R"), "r_share": c.params.get("r_share"),
                         "n_forward": int(per_q["n_forward"].sum()),
                         **{m: v for m, v in dict((clean or {}).get(name, {})).items()}})
    return pd.DataFrame(rows)


def load_attack_results(attack_results) -> pd.DataFrame:
    """An attack-results frame from a DataFrame, a list of row dicts, or a ``.jsonl``/``.json``/
    ``.csv`` path. Needs columns ``qid, docno, orig_rank, adv_rank`` (1-based ranks)."""
    if isinstance(attack_results, pd.DataFrame):
        frame = attack_results.copy()
    elif isinstance(attack_results, (str, Path)):
        p = Path(attack_results).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"attack results {p} not found")
        if p.suffix == ".csv":
            frame = pd.read_csv(p, dtype={"qid": str, "docno": str})
        elif p.suffix in (".jsonl", ".json"):
            frame = pd.read_json(p, lines=p.suffix == ".jsonl", dtype={"qid": str, "docno": str})
        else:
            raise ValueError(f"attack results {p}: use a .jsonl, .json or .csv file")
    elif isinstance(attack_results, Iterable):
        frame = pd.DataFrame(list(attack_results))
    else:
        raise TypeError("attack_results must be a DataFrame, a list of row dicts or a file path, "
                        f"got {type(attack_results).__name__}")
    missing = [c for c in ("qid", "docno", "orig_rank", "adv_rank") if c not in frame.columns]
    if missing:
        raise ValueError(f"attack results need columns qid, docno, orig_rank, adv_rank "
                         f"(1-based ranks in the certified lists); missing {missing}")
    frame["qid"] = frame["qid"].astype(str)
    frame["docno"] = frame["docno"].astype(str)
    return frame


# -- attack outcome ----------------------------------------------------------------------------
def attack_outcome(certificate, attack_results) -> dict:
    """Attack success on certified vs uncertified lists, per cut-off K, and the soundness check.

    For each K of the certificate, the targets outside the top K (``orig_rank > K``) are split by
    whether their query's list is certified at K. Per group: targets, lists, ``success`` (rank
    improved: ``adv_rank < orig_rank``), ``entered`` (``adv_rank <= K``: the list's top K changed).
    ``broken`` lists every (qid, K, docno) where a certified list's top K was entered: it must be
    empty. Rows with a non-empty ``error`` are not attacks and are counted as ``skipped``.
    ``rank_mismatch`` counts targets whose ``orig_rank`` differs from their rank in the
    certificate's list (beyond ties): the results then do not refer to the certified lists.
    """
    frame = load_attack_results(attack_results)
    n_rows = len(frame)
    if "error" in frame.columns:
        err = frame["error"].fillna("").astype(str).str.len() > 0
        skipped = int(err.sum())
        frame = frame[~err]
    else:
        skipped = 0
    cf = certificate.frame.copy()
    cf["qid"] = cf["qid"].astype(str)
    docs = certificate.docs.copy()
    docs["qid"] = docs["qid"].astype(str)
    docs["docno"] = docs["docno"].astype(str)
    known = frame["qid"].isin(set(cf["qid"]))
    unmatched = int((~known).sum())
    frame = frame[known].copy()
    frame["orig_rank"] = frame["orig_rank"].astype(int)
    frame["adv_rank"] = frame["adv_rank"].astype(int)
    if "success" not in frame.columns:
        frame["success"] = frame["adv_rank"] < frame["orig_rank"]
    frame["success"] = frame["success"].astype(bool)

    # do the ranks refer to the certified lists? (rank by g, ties allowed either way)
    mism = 0
    if len(frame):
        m = frame.merge(docs[["qid", "docno", "g", "rank"]], on=["qid", "docno"], how="left")
        for r in m.itertuples(index=False):
            if pd.isna(r.g):
                mism += 1
                continue
            same = docs[docs["qid"] == r.qid]["g"].to_numpy()
            lo = 1 + int((same > r.g).sum())
            hi = int((same >= r.g).sum())
            if not lo <= r.orig_rank <= hi:
                mism += 1

    per_k, broken = [], []
    certified = {(q, int(k)): (bool(c), bool(t)) for q, k, c, t in
                 zip(cf["qid"], cf["K"], cf["certified"], cf["trivial"])}
    for K in sorted(cf["K"].unique()):
        K = int(K)
        out = frame[frame["orig_rank"] > K]
        flags = [certified.get((q, K), (False, False)) for q in out["qid"]]
        is_cert = np.array([f[0] for f in flags], dtype=bool)
        row = {"K": K}
        for name, mask in (("certified", is_cert), ("uncertified", ~is_cert)):
            sub = out[mask] if len(out) else out
            entered = sub["adv_rank"] <= K
            row[f"{name}_targets"] = int(len(sub))
            row[f"{name}_lists"] = int(sub["qid"].nunique())
            row[f"{name}_success"] = float(sub["success"].mean()) if len(sub) else None
            row[f"{name}_entered"] = int(entered.sum())
            row[f"{name}_entered_rate"] = float(entered.mean()) if len(sub) else None
            row[f"{name}_rank_gain"] = (float((sub["orig_rank"] - sub["adv_rank"]).mean())
                                        if len(sub) else None)
            if name == "certified":
                for r in sub[entered].itertuples(index=False):
                    broken.append({"qid": r.qid, "K": K, "docno": r.docno,
                                   "orig_rank": int(r.orig_rank), "adv_rank": int(r.adv_rank)})
        per_k.append(row)
    checks = int(sum(r["certified_targets"] for r in per_k))
    return {"n_rows": int(n_rows), "n_attacks": int(len(frame)), "skipped": skipped,
            "unmatched_qids": unmatched, "rank_mismatch": int(mism),
            "success_rate": float(frame["success"].mean()) if len(frame) else None,
            "n_queries": int(frame["qid"].nunique()), "per_k": per_k, "checks": checks,
            "broken": broken, "sound": not broken,
            "params": dict(frame.attrs.get("params", {}))}


# -- report data -------------------------------------------------------------------------------
def _clean_block(clean: Mapping | None) -> dict:
    clean = dict(clean or {})
    base = {k: _num(v) for k, v in dict(clean.get("base") or {}).items()}
    smoothed = {k: _num(v) for k, v in dict(clean.get("smoothed") or {}).items()}
    rows = []
    for m in list(dict.fromkeys([*base, *smoothed])):
        b, s = base.get(m), smoothed.get(m)
        rows.append({"measure": m, "base": b, "smoothed": s,
                     "delta": None if b is None or s is None else s - b,
                     "relative": None if b in (None, 0) or s is None else (s - b) / b})
    pq = clean.get("per_query")
    if isinstance(pq, pd.DataFrame):
        pq = pq.to_dict("records")
    pq = [{k: (str(v) if k == "qid" else _num(v)) for k, v in dict(r).items()} for r in (pq or [])]
    return {"measures": rows, "base": base, "smoothed": smoothed, "per_query": pq,
            "note": clean.get("note"), "ood": clean.get("ood")}


def _taxonomy(cert, clean: dict, attack: dict | None) -> list[dict]:
    out = []
    pq = clean["per_query"]
    for key, task in TAXONOMY:
        row = {"key": key, "task": task, "measured": False, "value": None, "detail": ""}
        if key == "iid":
            col_b, col_s = f"{_PRIMARY_MEASURE}_base", f"{_PRIMARY_MEASURE}_smoothed"
            vb = [r[col_b] for r in pq if r.get(col_b) is not None]
            vs = [r[col_s] for r in pq if r.get(col_s) is not None]
            if len(vb) >= 2:
                row.update(measured=True, value={"std_base": float(np.std(vb, ddof=1)),
                                                 "std_smoothed": float(np.std(vs, ddof=1))
                                                 if len(vs) >= 2 else None})
                row["detail"] = (f"per-query {_PRIMARY_MEASURE} standard deviation over "
                                 f"{len(vb)} queries: base {np.std(vb, ddof=1):.4f}"
                                 + (f", smoothed {np.std(vs, ddof=1):.4f}" if len(vs) >= 2 else ""))
            else:
                row["detail"] = ("not measured: needs clean per-query effectiveness of at least "
                                 "2 queries")
        elif key == "ood-query":
            row["detail"] = ("not measured: needs a second query set of another type on the "
                             "same corpus (report the drop rate (M_ood - M_iid) / M_iid)")
        elif key == "ood-corpus":
            ood = clean.get("ood")
            if ood and ood.get("base") is not None and clean["base"].get(_PRIMARY_MEASURE):
                iid = clean["base"][_PRIMARY_MEASURE]
                drop = (ood["base"] - iid) / iid
                row.update(measured=True, value={"drop_rate_base": drop})
                row["detail"] = (f"drop rate of {_PRIMARY_MEASURE} on {ood.get('name', 'OOD')}: "
                                 f"{drop:+.3f}")
            else:
                row["detail"] = ("not measured: certify the same ranker on a second collection "
                                 "and compare (drop rate (M_ood - M_iid) / M_iid)")
        elif key == "retrieval-attack":
            row["detail"] = ("not covered: the certificate re-ranks a fixed first-stage "
                             "candidate list; attacks on the first stage are outside its threat "
                             "model")
        else:
            crq = {int(k): float(v) for k, v in zip(cert.crq["K"], cert.crq["CRQ"])}
            val = {"CRQ": crq}
            det = "provable: CRQ@K " + ", ".join(f"@{k}={v:.3f}" for k, v in crq.items())
            if attack:
                val["attack_success_rate"] = attack["success_rate"]
                val["broken_certified"] = len(attack["broken"])
                det += (f"; empirical: attack success {_pct(attack['success_rate'])} over "
                        f"{attack['n_attacks']} targets, {len(attack['broken'])} certified "
                        "lists broken")
            row.update(measured=True, value=val, detail=det)
        out.append(row)
    return out


def build_report_data(certificate, *, meta: Mapping | None = None, clean: Mapping | None = None,
                      attack_results=None, compare: Mapping | None = None) -> dict:
    """Everything the report shows, as one JSON-able dict (``report.json``'s content).

    ``compare``: optional name -> Certificate of other smoothing modes on the same lists (the
    report's own certificate is added under its ``smoothing`` name unless present); their CRQ@K
    with Wilson intervals and certified radii go to ``"modes"`` (:func:`compare_modes`)."""
    meta = dict(meta or {})
    params = dict(certificate.params)
    frame = certificate.frame.copy()
    frame["qid"] = frame["qid"].astype(str)
    query_text = {str(k): v for k, v in dict(meta.pop("query_text", None) or {}).items()}
    clean_b = _clean_block(clean)
    attack = attack_outcome(certificate, attack_results) if attack_results is not None else None

    ks = sorted(int(k) for k in frame["K"].unique())
    crq = []
    for K in ks:
        sub = frame[frame["K"] == K]
        row = certificate.crq[certificate.crq["K"] == K]
        lo, hi = wilson_interval(int(sub["certified"].sum()), int(sub["qid"].nunique()))
        crq.append({"K": K, "CRQ": _num(row["CRQ"].iloc[0]) if len(row) else None,
                    "ci_low": _num(lo), "ci_high": _num(hi), **_radius_stats(sub),
                    "n_certified": int(sub["certified"].sum()),
                    "n_queries": int(sub["qid"].nunique()),
                    "n_trivial": int(sub["trivial"].sum()),
                    "n_nontrivial_certified": int((sub["certified"] & ~sub["trivial"]).sum()),
                    "median_margin": _num(sub.loc[~sub["trivial"], "margin"].median())
                    if (~sub["trivial"]).any() else None,
                    "median_delta_max": _num(sub.loc[~sub["trivial"], "delta_max"].median())
                    if (~sub["trivial"]).any() else None})

    eff = {r["qid"]: r for r in clean_b["per_query"] if "qid" in r}
    per_query = []
    for qid, g in frame.groupby("qid", sort=True):
        g = g.sort_values("K")
        certs = [{"K": int(r.K), "certified": bool(r.certified), "margin": _num(r.margin),
                  "delta_max": _num(r.delta_max), "n_samples": int(r.n_samples),
                  "trivial": bool(r.trivial)} for r in g.itertuples(index=False)]
        nontriv = [c["K"] for c in certs if c["certified"] and not c["trivial"]]
        e = eff.get(qid, {})
        per_query.append({
            "qid": qid, "query": query_text.get(qid), "m": int(g["m"].iloc[0]),
            "n_forward": int(g["n_forward"].iloc[0]),
            **{k: v for k, v in e.items() if k != "qid"},
            "max_certified_K": max(nontriv) if nontriv else None,
            "certificates": certs})

    per_q = frame.drop_duplicates("qid")
    docs = certificate.docs
    summary = {
        "ranker": meta.get("ranker", params.get("base")),
        "collection": meta.get("collection"),
        "n_queries": int(frame["qid"].nunique()),
        "mode": params.get("mode"), "bound": params.get("bound"), "alpha": params.get("alpha"),
        "N": params.get("N"), "R": params.get("R"), "r_share": params.get("r_share"),
        "smoothing": params.get("smoothing", "synonym"),
        "threat": params.get("threat"), "threat_fingerprint": params.get("threat_fingerprint"),
        "crq": {str(r["K"]): r["CRQ"] for r in crq},
        "crq_nontrivial": {str(r["K"]): r["n_nontrivial_certified"] / r["n_queries"]
                           for r in crq if r["n_queries"]},
        "n_forward_total": int(per_q["n_forward"].sum()),
        "n_forward_mean": float(per_q["n_forward"].mean()) if len(per_q) else 0.0,
        "median_radius": _num(docs["delta"].median()) if len(docs) else None,
        "share_radius_zero": _num((docs["delta"] == 0).mean()) if len(docs) else None,
    }
    for side in ("base", "smoothed"):
        for m, v in clean_b[side].items():
            summary[f"{m}_{side}"] = v
    if attack is not None:
        summary.update({"attack_targets": attack["n_attacks"],
                        "attack_success_rate": attack["success_rate"],
                        "attack_checks": attack["checks"],
                        "broken_certified": len(attack["broken"]),
                        "sound": attack["sound"]})
    for k in ("wall_s", "certify_s"):
        if k in meta:
            summary[k] = meta[k]
    modes = None
    if compare:
        allc = dict(compare)
        own = str(params.get("smoothing", "synonym"))
        if not any(c is certificate for c in allc.values()):
            allc = {own if own not in allc else f"{own} (this report)": certificate, **allc}
        modes = compare_modes(allc).to_dict("records")
    return _jsonable({
        "summary": summary,
        "meta": {**{k: v for k, v in params.items() if k not in meta}, **meta},
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "clean": clean_b,
        "crq": crq,
        "per_query": per_query,
        "certificate": frame.to_dict("records"),
        "radii": {"quantiles": {str(q): _num(docs["delta"].quantile(q)) for q in
                                (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)} if len(docs) else {},
                  "n_documents": int(len(docs))},
        "certified_radius": _certified_radius_block(frame),
        "modes": modes,
        "attack": attack,
        "taxonomy": _taxonomy(certificate, clean_b, attack),
    })


def _certified_radius_block(frame: pd.DataFrame) -> dict:
    """Per K: the distribution of the lists' certified radii (words, share); -1 = not certified
    even without an attack. Empty for certificates without radius columns."""
    if "radius_words" not in frame:
        return {}
    out = {}
    for K, sub in frame[~frame["trivial"]].groupby("K"):
        w = sub["radius_words"].dropna()
        sh = sub["radius_share"].dropna()
        out[str(int(K))] = {
            "words": {str(q): _num(w.quantile(q, interpolation="lower"))
                      for q in (0.0, 0.25, 0.5, 0.75, 1.0)} if len(w) else {},
            "share": {str(q): _num(sh.quantile(q, interpolation="lower"))
                      for q in (0.0, 0.25, 0.5, 0.75, 1.0)} if len(sh) else {},
            "n_unbounded": int(np.isinf(w).sum()), "n_lists": int(len(sub))}
    return out


# -- figures -----------------------------------------------------------------------------------
def _figures(data: dict, certificate) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False})
    figs: dict[str, bytes] = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs[name] = buf.getvalue()

    crq = data["crq"]
    ks = [r["K"] for r in crq]
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    y = [r["CRQ"] or 0.0 for r in crq]
    y_nt = [r["n_nontrivial_certified"] / max(r["n_queries"], 1) for r in crq]
    ax.plot(ks, y, "o-", color="#2b6cb0", label="CRQ@K")
    if any(r["n_trivial"] for r in crq):
        ax.plot(ks, y_nt, "s--", color="#dd6b20", mfc="none",
                label="excluding trivial lists (K ≥ list length)")
    ax.set_xlabel("K (top-K cut-off)")
    ax.set_ylabel("certified robust queries")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.set_title(f"CRQ@K ({data['summary']['mode']}, α={data['summary']['alpha']}, "
                 f"N={data['summary']['N']})", fontsize=10)
    save(fig, "crq")

    fr = certificate.frame[~certificate.frame["trivial"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    rng = np.random.default_rng(0)
    kk = sorted(fr["K"].unique())
    for i, K in enumerate(kk):
        sub = fr[fr["K"] == K]
        x = i + rng.uniform(-0.18, 0.18, len(sub))
        c = np.where(sub["certified"], "#2f855a", "#c53030")
        a1.scatter(x, sub["margin"], s=14, c=c, alpha=0.8, linewidths=0)
    a1.axhline(0, color="black", lw=0.8)
    a1.set_xticks(range(len(kk)), [str(k) for k in kk])
    a1.set_xlabel("K")
    a1.set_ylabel("margin (> 0: certified)")
    a1.set_title("Certificate margins per query (green: certified)", fontsize=10)
    a1.grid(alpha=0.3, axis="y")
    if not len(kk):
        a1.text(0.5, 0.5, "every K is trivial (K ≥ list length)", ha="center",
                transform=a1.transAxes)
    d = certificate.docs["delta"].to_numpy(dtype=float)
    a2.hist(d, bins=np.linspace(0, 1, 21), color="#718096")
    a2.set_xlabel("radius Δ_d (score change an attack can cause)")
    a2.set_ylabel("documents")
    a2.set_title("Per-document radii", fontsize=10)
    save(fig, "margins")

    pq = data["clean"]["per_query"]
    cb, cs = f"{_PRIMARY_MEASURE}_base", f"{_PRIMARY_MEASURE}_smoothed"
    pts = [(r[cb], r[cs]) for r in pq if r.get(cb) is not None and r.get(cs) is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        b, s = np.array(pts).T
        ax.plot([0, 1], [0, 1], color="#a0aec0", lw=1)
        ax.scatter(b, s, s=18, color="#2b6cb0", alpha=0.8)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(f"{_PRIMARY_MEASURE}, base ranker")
        ax.set_ylabel(f"{_PRIMARY_MEASURE}, smoothed ranker")
        ax.set_title("Clean effectiveness per query", fontsize=10)
        ax.grid(alpha=0.3)
        save(fig, "clean")

    att = data.get("attack")
    if att and att["per_k"]:
        rows = [r for r in att["per_k"] if r["certified_targets"] or r["uncertified_targets"]]
        if rows:
            fig, ax = plt.subplots(figsize=(6.2, 3.2))
            x = np.arange(len(rows))
            ax.bar(x - 0.2, [r["certified_entered_rate"] or 0 for r in rows], 0.4,
                   color="#2f855a", label="certified lists")
            ax.bar(x + 0.2, [r["uncertified_entered_rate"] or 0 for r in rows], 0.4,
                   color="#c53030", label="uncertified lists")
            ax.set_xticks(x, [str(r["K"]) for r in rows])
            ax.set_xlabel("K")
            ax.set_ylabel("targets that entered the top K")
            ax.set_ylim(0, 1.05)
            ax.legend(frameon=False, fontsize=8)
            ax.set_title("Attacks on outside documents", fontsize=10)
            save(fig, "attack")
    return figs


# -- rendering ---------------------------------------------------------------------------------
_META_LABELS = [
    ("ranker", "Ranker (spec)"), ("ranker_name", "Base ranker"), ("smoothed", "Smoothed ranker"),
    ("collection", "Collection"), ("dataset", "Dataset (spec)"),
    ("collection_fingerprint", "Collection fingerprint"), ("first_stage", "First stage"),
    ("k", "Candidates per query (k)"), ("n_queries", "Queries"), ("query_seed", "Query sample seed"),
    ("threat", "Threat model"), ("threat_spec", "Threat model (spec)"),
    ("threat_fingerprint", "Threat-model fingerprint"), ("sets_fingerprint", "Smoothing-set fingerprint"),
    ("max_set_size", "Max smoothing-set size"), ("symmetric", "Symmetric closure"),
    ("dtype", "Encoder precision"), ("squash", "Squash"), ("temperature", "Temperature"), ("center", "Center (subtracted)"),
    ("mode", "Certification mode"), ("bound", "Confidence bound"), ("alpha", "α"),
    ("N", "Samples per document (N)"), ("n0", "First look (adaptive n0)"),
    ("futility", "Futility z (adaptive)"),
    ("R", "Word budget R (None: every word)"), ("seed", "Smoothing seed"), ("ks", "Cut-offs K"),
    ("n_forward", "Base forward passes (certification)"), ("certify_s", "Certification wall time (s)"),
    ("wall_s", "Job wall time (s)"), ("command", "Reproduce with"),
]
_MARGIN_NOTE = (
    "Margin of a query at K: for rigorous/adaptive, the lowest lower confidence bound in the top K "
    "minus the highest (upper bound + Δ) outside it; for certdr, g_K − g_{K+1} − max Δ − 2ε. "
    "Δ_max is the largest radius outside the top K: when it is close to 1, no score gap can "
    "certify the list. In adaptive mode the margin is taken at the look where K was decided; a "
    "list given up after few draws has wide intervals, hence a very negative margin.")

#: Labels shown in the HTML report's first table; the others sit in a collapsed "All parameters".
_ESSENTIAL_META = {"Ranker (spec)", "Collection", "First stage", "Candidates per query (k)",
                   "Queries", "Threat model", "Threat-model fingerprint", "Symmetric closure",
                   "Squash", "Temperature", "Center (subtracted)", "Certification mode",
                   "Confidence bound", "α", "Samples per document (N)",
                   "Word budget R (None: every word)", "Reproduce with"}
_HIDDEN_META = {"qids", "base", "threshold", "search_cap", "attack"}


def _meta_rows(meta: dict) -> list[tuple[str, str]]:
    rows, seen = [], set()
    for key, label in _META_LABELS:
        if key in meta:
            rows.append((label, meta[key]))
            seen.add(key)
    for key, v in meta.items():
        if key not in seen and key not in _HIDDEN_META:
            rows.append((key, v))
    return [(label, _fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v))
            for label, v in rows]


def _cert_cell(c: dict) -> tuple[str, str]:
    """(text, css class) of a per-query certificate cell."""
    if c["trivial"]:
        return "trivial", "triv"
    return (("✓ " if c["certified"] else "✗ ") + _fmt(c["margin"], 3),
            "yes" if c["certified"] else "no")


def _verdict(att: dict | None) -> tuple[str, str, str]:
    """(css class, headline, explanation) of the soundness check."""
    if att is None:
        return ("muted", "No attack results given",
                "Run the job with attack parameters (or pass an attack-results file) to check "
                "the certificates empirically.")
    if att["broken"]:
        return ("bad", f"SOUNDNESS ALERT: {len(att['broken'])} certified list(s) were broken",
                "An attack moved an outside document into the top K of a list certified at K. "
                "Either an event of probability at most α happened (the confidence intervals "
                "failed), or the certificate, the radii or the attack's rank bookkeeping has a "
                "bug. Treat it as a bug until shown otherwise: rerun with another seed and "
                "check the attack's threat model equals the certified one.")
    if att["checks"] == 0:
        return ("muted", "No attacked document was outside the top K of a certified list",
                "The check needs targets ranked below K in lists certified at K.")
    n = att["checks"]
    return ("good", f"No certified list was broken ({n} check{'s' if n != 1 else ''})",
            "Every attack on a document outside the top K of a certified list left that top K "
            "unchanged, as the certificate guarantees.")


def _interpretation(data: dict) -> list[str]:
    s = data["summary"]
    out = []
    nt = [r for r in data["crq"] if r["n_queries"] and r["n_trivial"] < r["n_queries"]]
    if nt and all(r["n_nontrivial_certified"] == 0 for r in nt):
        med = s.get("median_radius")
        msg = "No list is certified at any K shorter than the lists."
        if med is not None and med > 0.5:
            msg += (f" The median document radius Δ is {med:.3f}: an allowed substitution can "
                    "move a smoothed score by almost the whole [0, 1] range, so no score gap "
                    "can cover it. Smaller radii need smoothing sets that are equal across "
                    "each attack set or a word budget R")
            if data.get("meta", {}).get("symmetric") is False:
                msg += (": certify against the threat model's symmetric closure (drop "
                        "--no-symmetric, or symmetric=True) or pass --R.")
            else:
                msg += " (--R N: at most N substituted words per document)."
        else:
            msg += (" Radii are small, so the confidence terms or small score gaps are what "
                    "stop certification: more samples (N) or a steeper squash help.")
        out.append(msg)
    short = [r for r in data["crq"] if r["n_trivial"]]
    if short:
        out.append("Lists with at most K documents are not counted as certified at K (nothing "
                   "is outside their top K): " + ", ".join(
                       f"K={r['K']}: {r['n_trivial']} of {r['n_queries']} lists"
                       for r in short) + ". Use K smaller than the list length.")
    meta = data.get("meta", {})
    if meta.get("symmetric"):
        out.append(f"Certificates are against {meta.get('threat', 'the symmetric closure')}, the "
                   "threat model closed under symmetry on the collection's vocabulary: it allows "
                   "every substitution of the threat model as given (and the reverse ones), so "
                   "each certificate also holds against the threat model as given.")
    b, sm = s.get(f"{_PRIMARY_MEASURE}_base"), s.get(f"{_PRIMARY_MEASURE}_smoothed")
    if b is not None and sm is not None:
        out.append(f"Smoothing changes {_PRIMARY_MEASURE} from {b:.4f} to {sm:.4f} "
                   f"({sm - b:+.4f}).")
    return out


_CSS = """
:root{--fg:#1a202c;--muted:#4a5568;--line:#e2e8f0;--bg:#f7fafc;--acc:#2b6cb0}
*{box-sizing:border-box}
body{font:15px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--fg);margin:0;background:#fff}
main{max-width:1060px;margin:0 auto;padding:28px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 10px;padding-bottom:6px;
border-bottom:2px solid var(--line)}
.sub{color:var(--muted);margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:18px 0}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600}.card .l{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:13.5px}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fbfdff}
table.kv{table-layout:fixed}table.kv td{overflow-wrap:anywhere}
table.kv td:first-child{color:var(--muted);width:30%}
details{margin:6px 0}summary{cursor:pointer;color:var(--acc)}
td.yes{color:#276749;font-weight:600}td.no{color:#9b2c2c}td.triv{color:#a0aec0}
.verdict{border-radius:8px;padding:12px 16px;margin:12px 0;border:1px solid}
.verdict.good{background:#f0fff4;border-color:#9ae6b4}.verdict.bad{background:#fff5f5;
border:3px solid #e53e3e;font-size:16px}.verdict.muted{background:var(--bg);border-color:var(--line)}
.verdict b{display:block;margin-bottom:4px}
.note{color:var(--muted);font-size:13.5px}figure{margin:10px 0}figure img{max-width:100%}
code{background:var(--bg);padding:1px 4px;border-radius:4px;font-size:13px}
.scroll{max-height:560px;overflow:auto;border:1px solid var(--line);border-radius:6px}
.scroll table{margin:0}
"""


def _h(x) -> str:
    return html.escape(str(x))


def _table_html(header: list[str], rows: list[list], numeric: set[int] = frozenset(),
                classes: list[list[str]] | None = None, cls: str = "") -> str:
    th = "".join(f'<th class="n">{_h(c)}</th>' if i in numeric else f"<th>{_h(c)}</th>"
                 for i, c in enumerate(header))
    body = []
    for ri, r in enumerate(rows):
        tds = []
        for i, v in enumerate(r):
            c = ["n"] if i in numeric else []
            if classes and classes[ri][i]:
                c.append(classes[ri][i])
            ca = f' class="{" ".join(c)}"' if c else ""
            tds.append(f"<td{ca}>{_h(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _table_md(header: list[str], rows: list[list]) -> str:
    def esc(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(esc(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _smoothing_title(s: dict) -> str:
    if s.get("smoothing") == "mask":
        return "Randomized masking smoothing (certificate against any word substitution)"
    return "CertDR randomized smoothing"


def _ci(lo, hi) -> str:
    return "—" if lo is None or hi is None else f"[{_fmt(lo, 3)}, {_fmt(hi, 3)}]"


_MODES_NOTE = ("Smoothing modes certified on the same candidate lists. Certified radius of a "
               "list: the largest number of substituted words per outside document (or share of "
               "its words) at which the same confidence intervals still certify it; -1 when not "
               "even the unattacked list is separated. Intervals over queries are Wilson 95 %.")


def _sections(data: dict) -> dict:
    """Tables shared by the HTML and Markdown renderers (same numbers, same formatting)."""
    s, crq = data["summary"], data["crq"]
    sec = {}
    sec["cards"] = []
    for r in crq:
        if r["n_trivial"] < r["n_queries"]:
            sec["cards"].append((f"CRQ@{r['K']}", _fmt(r["CRQ"], 3)))
    sec["cards"] = sec["cards"][:4]
    sec["cards"] += [("queries", _fmt(s["n_queries"])), ("forward passes", _fmt(s["n_forward_total"]))]
    b = s.get(f"{_PRIMARY_MEASURE}_base")
    sm = s.get(f"{_PRIMARY_MEASURE}_smoothed")
    if b is not None or sm is not None:
        sec["cards"].append((f"{_PRIMARY_MEASURE} base → smoothed", f"{_fmt(b, 3)} → {_fmt(sm, 3)}"))
    sec["meta"] = _meta_rows(data["meta"])
    sec["versions"] = [(k, _fmt(v)) for k, v in data["versions"].items()]
    sec["clean"] = (["measure", "base", "smoothed", "Δ", "relative"],
                    [[r["measure"], _fmt(r["base"]), _fmt(r["smoothed"]), _fmt(r["delta"]),
                      _pct(r["relative"])] for r in data["clean"]["measures"]])
    sec["crq"] = (["K", "CRQ@K", "95% CI (Wilson)", "certified", "queries", "trivial (K ≥ m)",
                   "median margin", "median Δ_max", "median certified radius (words)",
                   "median certified share"],
                  [[r["K"], _fmt(r["CRQ"]), _ci(r.get("ci_low"), r.get("ci_high")),
                    r["n_certified"], r["n_queries"], r["n_trivial"],
                    _fmt(r["median_margin"]), _fmt(r["median_delta_max"]),
                    _fmt(r.get("median_radius_words")), _fmt(r.get("median_radius_share"), 3)]
                   for r in crq])
    if data.get("modes"):
        sec["modes"] = (["mode", "K", "CRQ@K", "95% CI (Wilson)", "certified / queries",
                         "median certified radius (words)", "median certified share",
                         "forward passes"],
                        [[r["mode"], r["K"], _fmt(r["CRQ"], 3), _ci(r["ci_low"], r["ci_high"]),
                          f"{r['n_certified']} / {r['n_queries']}",
                          _fmt(r["median_radius_words"]), _fmt(r["median_radius_share"], 3),
                          _fmt(r["n_forward"])] for r in data["modes"]])
    ks = [r["K"] for r in crq]
    hdr = ["qid", "query", "m"]
    eff_cols = [c for c in (f"{_PRIMARY_MEASURE}_base", f"{_PRIMARY_MEASURE}_smoothed")
                if any(c in q for q in data["per_query"])]
    hdr += [c.replace("_", " ") for c in eff_cols] + ["max certified K"] + [f"K={k}" for k in ks]
    rows, classes = [], []
    for q in data["per_query"]:
        cells = {c["K"]: _cert_cell(c) for c in q["certificates"]}
        text = q.get("query") or ""
        text = text if len(text) <= 60 else text[:57] + "..."
        rows.append([q["qid"], text, q["m"]] + [_fmt(q.get(c)) for c in eff_cols]
                    + [_fmt(q["max_certified_K"])] + [cells.get(k, ("—", ""))[0] for k in ks])
        classes.append([""] * (4 + len(eff_cols)) + [cells.get(k, ("", ""))[1] for k in ks])
    sec["per_query"] = (hdr, rows, classes, len(eff_cols))
    att = data.get("attack")
    if att:
        sec["attack"] = (["K", "targets (cert.)", "lists (cert.)", "success (cert.)",
                          "entered top K (cert.)", "targets (uncert.)", "lists (uncert.)",
                          "success (uncert.)", "entered top K (uncert.)"],
                         [[r["K"], r["certified_targets"], r["certified_lists"],
                           _pct(r["certified_success"]), r["certified_entered"],
                           r["uncertified_targets"], r["uncertified_lists"],
                           _pct(r["uncertified_success"]), r["uncertified_entered"]]
                          for r in att["per_k"]
                          if r["certified_targets"] or r["uncertified_targets"]])
        setup = data["meta"].get("attack")
        sec["attack_setup"] = (", ".join(f"{k}={v}" for k, v in setup.items()
                                         if k not in ("lists",)) if isinstance(setup, dict)
                               else None)
        sec["broken"] = (["qid", "K", "docno", "rank before", "rank after"],
                         [[b_["qid"], b_["K"], b_["docno"], b_["orig_rank"], b_["adv_rank"]]
                          for b_ in att["broken"]])
    sec["taxonomy"] = (["task", "measured", "what the data says"],
                       [[t["task"], "yes" if t["measured"] else "no", t["detail"]]
                        for t in data["taxonomy"]])
    sec["verdict"] = _verdict(att)
    sec["interpretation"] = _interpretation(data)
    return sec


_EXPLAIN = (
    "A ranked list is <b>certified top-K robust</b> when no substitution the threat model allows "
    "(words of documents ranked outside the top K replaced by words of their attack sets) can "
    "move an outside document into the top K of the smoothed ranker. The smoothed ranker scores "
    "a document by the mean squashed base score over N random substitutions from smoothing sets; "
    "an allowed attack moves that score by at most the document's radius Δ. "
    "<b>CRQ@K</b> is the share of queries whose list is certified at K; the margin is the left "
    "minus the right side of the mode's condition (certified when it is positive). With "
    "probability at least 1 − α (rigorous and adaptive modes) every certificate of a query "
    "holds; the certdr mode reproduces the paper's two-estimate test.")


def _render_html(data: dict, sec: dict, figs: dict[str, bytes]) -> str:
    s = data["summary"]

    def fig(name, caption):
        if name not in figs:
            return ""
        b64 = base64.b64encode(figs[name]).decode()
        return (f'<figure><img alt="{_h(caption)}" src="data:image/png;base64,{b64}">'
                f'<figcaption class="note">{_h(caption)}</figcaption></figure>')

    title = f"Certification report: {s.get('ranker')} on {s.get('collection') or 'a collection'}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{_h(title)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>{_h(title)}</h1>",
             f"<p class='sub'>{_h(_smoothing_title(s))}, mode <b>{_h(s['mode'])}</b>, "
             f"α = {_h(s['alpha'])}, N = {_h(s['N'])}, threat model <code>{_h(s['threat'])}</code> "
             f"(fingerprint <code>{_h(s['threat_fingerprint'])}</code>). "
             f"Generated {_h(data['created'])}.</p>",
             "<div class='cards'>" + "".join(
                 f"<div class='card'><div class='v'>{_h(v)}</div><div class='l'>{_h(k)}</div></div>"
                 for k, v in sec["cards"]) + "</div>"]
    cls, head, expl = sec["verdict"]
    parts.append(f"<div class='verdict {cls}'><b>{_h(head)}</b>{_h(expl)}</div>")
    for para in sec["interpretation"]:
        parts.append(f"<p>{_h(para)}</p>")

    parts.append("<h2>1. What was certified</h2>")
    parts.append(f"<p class='note'>{_EXPLAIN}</p>")
    def kv(rows):
        return "<table class='kv'><tbody>" + "".join(
            f"<tr><td>{_h(k)}</td><td>{_h(v)}</td></tr>" for k, v in rows) + "</tbody></table>"

    main_rows = [r for r in sec["meta"] if r[0] in _ESSENTIAL_META]
    parts.append(kv(main_rows))
    parts.append("<details><summary>All parameters (fingerprints, seeds, timings)</summary>"
                 + kv([r for r in sec["meta"] if r not in main_rows]) + "</details>")
    parts.append("<details><summary>Software versions</summary><table class='kv'><tbody>" + "".join(
        f"<tr><td>{_h(k)}</td><td>{_h(v)}</td></tr>" for k, v in sec["versions"])
        + "</tbody></table></details>")

    parts.append("<h2>2. Clean effectiveness</h2>")
    h_, r_ = sec["clean"]
    if r_:
        parts.append("<p class='note'>Both rankers re-rank the same first-stage candidate lists; "
                     "the smoothed ranker ranks by its estimated smoothed scores.</p>")
        if data["clean"].get("note"):
            parts.append(f"<p class='note'>{_h(data['clean']['note'])}</p>")
        parts.append(_table_html(h_, r_, numeric={1, 2, 3, 4}))
        parts.append(fig("clean", "Per-query effectiveness, base vs smoothed (diagonal: no change)"))
    else:
        parts.append("<p class='note'>No clean effectiveness was given.</p>")

    parts.append("<h2>3. Certified robust queries (CRQ@K)</h2>")
    parts.append(fig("crq", "Share of queries whose top K is certified; dashed: lists longer than "
                            "K only"))
    h_, r_ = sec["crq"]
    parts.append(_table_html(h_, r_, numeric={0, 1, 3, 4, 5, 6, 7, 8, 9}))
    if "modes" in sec:
        parts.append("<h3>Smoothing modes compared</h3>")
        parts.append(f"<p class='note'>{_h(_MODES_NOTE)}</p>")
        h_, r_ = sec["modes"]
        parts.append(_table_html(h_, r_, numeric={1, 2, 5, 6, 7}))

    parts.append("<h2>4. Margins and radii</h2>")
    parts.append(f"<p class='note'>{_h(_MARGIN_NOTE)}</p>")
    parts.append(fig("margins", "Left: margins per query and K (green: certified). Right: "
                                "distribution of the per-document radii Δ."))

    parts.append("<h2>5. Per-query certificates</h2>")
    h_, r_, c_, ne = sec["per_query"]
    parts.append("<p class='note'>Cells: ✓/✗ and the margin; 'trivial' when the list has at most "
                 "K documents.</p>")
    parts.append("<div class='scroll'>" + _table_html(
        h_, r_, numeric={2, *range(3, 4 + ne)}, classes=c_) + "</div>")

    parts.append("<h2>6. Attacks on certified and uncertified lists</h2>")
    if "attack" in sec:
        att = data["attack"]
        parts.append(f"<p class='note'>{att['n_attacks']} attacked targets on "
                     f"{att['n_queries']} queries (attack success overall: "
                     f"{_pct(att['success_rate'])}). A target counts at K when it was ranked "
                     "below K; 'success' = its rank improved, 'entered top K' = it reached rank "
                     "≤ K, which on a certified list would contradict the certificate."
                     + (f" {att['skipped']} rows with errors skipped." if att["skipped"] else "")
                     + (f" {att['rank_mismatch']} targets' original ranks do not match the "
                        "certified lists: those results may refer to another ranking."
                        if att["rank_mismatch"] else "") + "</p>")
        if sec.get("attack_setup"):
            parts.append(f"<p class='note'>Attack setup: {_h(sec['attack_setup'])}</p>")
        h_, r_ = sec["attack"]
        parts.append(_table_html(h_, r_, numeric=set(range(9))) if r_ else
                     "<p class='note'>No target was ranked below any certified cut-off K.</p>")
        parts.append(fig("attack", "Share of outside targets that entered the top K"))
        if att["broken"]:
            h_, r_ = sec["broken"]
            parts.append("<p><b>Broken certified lists:</b></p>" + _table_html(h_, r_))
    else:
        parts.append("<p class='note'>No attack results were given.</p>")

    parts.append("<h2>7. Robustness taxonomy</h2>")
    parts.append("<p class='note'>The five tasks of “Are Neural Ranking Models Robust?”; this "
                 "report fills those its data allows.</p>")
    h_, r_ = sec["taxonomy"]
    parts.append(_table_html(h_, r_))
    parts.append("<p class='note'>The same numbers are in <code>report.json</code> (full "
                 "precision) and <code>report.md</code>.</p></main></body></html>")
    return "\n".join(p for p in parts if p)


def _render_md(data: dict, sec: dict, fig_paths: dict[str, str]) -> str:
    s = data["summary"]
    out = [f"# Certification report: {s.get('ranker')} on {s.get('collection') or 'a collection'}",
           "",
           f"{_smoothing_title(s)}, mode **{s['mode']}**, alpha = {s['alpha']}, "
           f"N = {s['N']}, threat model `{s['threat']}` (fingerprint `{s['threat_fingerprint']}`). "
           f"Generated {data['created']}.", "",
           " · ".join(f"**{k}**: {v}" for k, v in sec["cards"]), ""]
    cls, head, expl = sec["verdict"]
    out += [f"> **{head}**  ", f"> {expl}", ""]
    out += [p + "\n" for p in sec["interpretation"]]
    explain = _EXPLAIN.replace("<b>", "**").replace("</b>", "**")
    out += ["## 1. What was certified", "", explain, "",
            _table_md(["item", "value"], [list(r) for r in sec["meta"]]), "",
            "Software versions: " + ", ".join(f"{k} {v}" for k, v in sec["versions"]), ""]
    out += ["## 2. Clean effectiveness", ""]
    h_, r_ = sec["clean"]
    if r_:
        if data["clean"].get("note"):
            out += [data["clean"]["note"], ""]
        out += [_table_md(h_, r_), ""]
        if "clean" in fig_paths:
            out += [f"![clean effectiveness per query]({fig_paths['clean']})", ""]
    else:
        out += ["No clean effectiveness was given.", ""]
    out += ["## 3. Certified robust queries (CRQ@K)", ""]
    if "crq" in fig_paths:
        out += [f"![CRQ@K]({fig_paths['crq']})", ""]
    h_, r_ = sec["crq"]
    out += [_table_md(h_, r_), ""]
    if "modes" in sec:
        h_, r_ = sec["modes"]
        out += ["### Smoothing modes compared", "", _MODES_NOTE, "", _table_md(h_, r_), ""]
    out += ["## 4. Margins and radii", "", _MARGIN_NOTE, ""]
    if "margins" in fig_paths:
        out += [f"![margins and radii]({fig_paths['margins']})", ""]
    out += ["## 5. Per-query certificates", "", "Cells: ✓/✗ and the margin; 'trivial' when the "
            "list has at most K documents.", ""]
    h_, r_, _, _ = sec["per_query"]
    out += [_table_md(h_, r_), ""]
    out += ["## 6. Attacks on certified and uncertified lists", ""]
    if "attack" in sec:
        att = data["attack"]
        out += [f"{att['n_attacks']} attacked targets on {att['n_queries']} queries (attack "
                f"success overall: {_pct(att['success_rate'])}); skipped rows: {att['skipped']}; "
                f"rank mismatches: {att['rank_mismatch']}.", ""]
        if sec.get("attack_setup"):
            out += [f"Attack setup: {sec['attack_setup']}", ""]
        h_, r_ = sec["attack"]
        out += [_table_md(h_, r_) if r_ else "No target was ranked below any certified cut-off K.",
                ""]
        if "attack" in fig_paths:
            out += [f"![attacks]({fig_paths['attack']})", ""]
        if att["broken"]:
            h_, r_ = sec["broken"]
            out += ["**Broken certified lists:**", "", _table_md(h_, r_), ""]
    else:
        out += ["No attack results were given.", ""]
    out += ["## 7. Robustness taxonomy", ""]
    h_, r_ = sec["taxonomy"]
    out += [_table_md(h_, r_), ""]
    return "\n".join(out)


def write_report(out_dir, certificate, *, meta: Mapping | None = None,
                 clean: Mapping | None = None, attack_results=None,
                 compare: Mapping | None = None) -> dict:
    """Write ``report.html``, ``report.md``, ``report.json`` and ``figures/*.png`` to ``out_dir``.

    Parameters
    ----------
    out_dir : folder (created when missing; existing report files are overwritten).
    certificate : :class:`defenses.certify.Certificate`.
    meta : what was certified, shown as is (known keys get friendly labels): e.g. ``ranker``,
        ``collection``, ``threat_spec``, ``k``, ``query_seed``, ``command``, ``wall_s``; the key
        ``query_text`` (``{qid: text}``) fills the per-query table and is not listed. The
        certificate's ``params`` are added for keys ``meta`` does not set.
    clean : ``{"base": {measure: value}, "smoothed": {measure: value}, "per_query": frame or rows
        with qid and e.g. "nDCG@10_base", "nDCG@10_smoothed", "note": str, "ood": {"name",
        "base"}}`` (all optional).
    attack_results : attack-results frame, row dicts or a ``.jsonl``/``.csv`` path whose ranks
        refer to the certified (smoothed) lists; see :func:`attack_outcome`.
    compare : optional name -> Certificate of other smoothing modes on the same lists (e.g.
        masking next to synonym smoothing): a "Smoothing modes compared" table with CRQ@K, Wilson
        intervals and certified radii (:func:`compare_modes`).

    Returns ``{"html": path, "md": path, "json": path, "figures": {name: path}, "data": dict}``.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    data = build_report_data(certificate, meta=meta, clean=clean, attack_results=attack_results,
                             compare=compare)
    figs = _figures(data, certificate)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    fig_paths = {}
    for name, png in figs.items():
        (fig_dir / f"{name}.png").write_bytes(png)
        fig_paths[name] = f"figures/{name}.png"
    data["figures"] = fig_paths
    sec = _sections(data)
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    paths["html"].write_text(_render_html(data, sec, figs), encoding="utf-8")
    paths["md"].write_text(_render_md(data, sec, fig_paths), encoding="utf-8")
    paths["json"].write_text(json.dumps(data, indent=2, allow_nan=False), encoding="utf-8")
    return {**{k: str(v) for k, v in paths.items()},
            "figures": {k: str(out / v) for k, v in fig_paths.items()}, "data": data}
