"""Certification workflow: the certify job, the report (HTML/Markdown/JSON), the attack check and
noisy training's doc_transform. Fast tier: exact term-weight ranker, tiny synonym tables and the
synthetic BEIR folder; the notebook test is in the slow tier (MiniLM)."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from attacks.threat import SynonymTable, match_case
from defenses.certify import certify
from defenses.smoothing import SmoothedRanker, SmoothingSets, noise_transform
from rankers.lexical import TermWeightRanker
from ranklab.certify_job import run_certify_job
from ranklab.report import attack_outcome, write_report

# asymmetric on purpose: T_hot = {hot, warm, tepid} but T_warm = {warm, tepid}, so documents with
# "hot" have a non-zero radius; "bees"/"honey"/"lava" form small symmetric components (radius 0)
TABLE = {"hot": ["warm"], "warm": ["tepid"], "bees": ["insects"], "honey": ["nectar"],
         "lava": ["magma"], "make": ["produce"]}


@pytest.fixture
def table_spec(tmp_path):
    path = tmp_path / "synonyms.json"
    path.write_text(json.dumps(TABLE))
    return f"table:{path}?symmetric=false"


def job(synthetic, table_spec, **kw):
    args = dict(ranker="term-weight", dataset=str(synthetic), k=5, ks=(1, 2, 3, 4),
                n_samples=64, threat=table_spec, center=0, symmetric=False, progress=False)
    args.update(kw)
    return run_certify_job(**args)


def _timing_free(summary: dict) -> dict:
    return {k: v for k, v in summary.items()
            if not k.endswith("_s") and k not in ("report", "report_json")}


# -- the job -----------------------------------------------------------------------------------
def test_job_end_to_end_report_matches_certificate(synthetic, table_spec, tmp_path):
    out = tmp_path / "report"
    s = job(synthetic, table_spec, out_dir=str(out))
    for name in ("report.html", "report.md", "report.json", "figures/crq.png",
                 "figures/margins.png"):
        assert (out / name).is_file(), name
    assert s["report"] == str(out / "report.html")
    assert set(k for k in s if k.startswith("CRQ@")) == {"CRQ@1", "CRQ@2", "CRQ@3", "CRQ@4"}
    data = json.loads((out / "report.json").read_text())
    assert {"summary", "meta", "crq", "per_query", "certificate", "versions",
            "taxonomy"} <= set(data)
    assert data["versions"]["torch"] and data["versions"]["python"]

    # the same certificate, computed independently from the same ingredients
    from attacks.threat import load_threat_model
    from ranklab.collections import load_collection

    col = load_collection(str(synthetic))
    cands = col.candidates("bm25", k=5)
    sm = SmoothedRanker(TermWeightRanker(), SmoothingSets(load_threat_model(table_spec)),
                        n_samples=64, seed=0, temperature=1.0)
    cert = certify(sm, cands, ks=[1, 2, 3, 4], progress=False)
    assert data["meta"]["threat_fingerprint"] == sm.threat.fingerprint
    assert data["summary"]["N"] == 64 and data["summary"]["alpha"] == 0.05
    for row, (K, crq) in zip(data["crq"], zip(cert.crq["K"], cert.crq["CRQ"])):
        assert row["K"] == K and row["CRQ"] == pytest.approx(crq)
        assert s[f"CRQ@{K}"] == pytest.approx(crq)
    got = pd.DataFrame(data["certificate"]).sort_values(["qid", "K"]).reset_index(drop=True)
    want = cert.frame.assign(qid=cert.frame["qid"].astype(str)).sort_values(
        ["qid", "K"]).reset_index(drop=True)
    assert (got["certified"] == want["certified"]).all()
    np.testing.assert_allclose(got["margin"].astype(float), want["margin"], rtol=1e-12)
    np.testing.assert_allclose(got["delta_max"].astype(float), want["delta_max"], rtol=1e-12)
    assert data["summary"]["n_forward_total"] == s["n_forward"] == int(
        cert.frame.drop_duplicates("qid")["n_forward"].sum())
    # a document with "hot" has a non-zero radius: the radii are not all trivial
    assert cert.docs["delta"].max() > 0
    # clean effectiveness of both rankers is reported with the same numbers everywhere
    assert data["summary"]["nDCG@10_base"] == pytest.approx(s["nDCG@10_base"])
    assert data["summary"]["nDCG@10_smoothed"] == pytest.approx(s["nDCG@10_smoothed"])
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for K, crq in zip(cert.crq["K"], cert.crq["CRQ"]):
        assert f"| {K} | {crq:.4f} |" in md
        assert f"<td class=\"n\">{crq:.4f}</td>" in html
    assert "data:image/png;base64," in html and "<img" in html
    assert "src=\"http" not in html  # self-contained


def test_job_same_seed_same_numbers(synthetic, table_spec, tmp_path):
    a = job(synthetic, table_spec, out_dir=str(tmp_path / "a"), seed=3)
    b = job(synthetic, table_spec, out_dir=str(tmp_path / "b"), seed=3)
    assert _timing_free(a) == _timing_free(b)
    ja = json.loads((tmp_path / "a" / "report.json").read_text())
    jb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert ja["certificate"] == jb["certificate"] and ja["crq"] == jb["crq"]


def test_job_center_and_temperature_recorded(synthetic, table_spec):
    from ranklab.collections import load_collection

    s = job(synthetic, table_spec, center="auto", temperature=2.0, ranker="bm25")
    scores = load_collection(str(synthetic)).candidates("bm25", k=5)["score"]
    assert s["temperature"] == 2.0 and s["center"] == pytest.approx(float(np.median(scores)))
    assert s["report"] is None
    assert job(synthetic, table_spec, ranker="bm25")["temperature"] == 1.0  # by ranker family


@pytest.mark.parametrize("kw,msg", [
    ({"ks": (5, 10)}, "trivially certified"),
    ({"mode": "fast"}, "mode"),
    ({"temperature": float("inf")}, "finite"),
    ({"ks": (1, 20)}, "--ks"),
    ({"n_samples": 0}, "n_samples"),
    ({"center": "middle"}, "center"),
    ({"attack": {"max_lists": 2}}, "differentiable"),
    ({"attack": {"typo": 1}}, "unknown attack parameter"),
])
def test_job_clear_errors(synthetic, table_spec, kw, msg):
    with pytest.raises(ValueError, match=msg):
        job(synthetic, table_spec, **kw)


# -- the attack check --------------------------------------------------------------------------
WEIGHTS = {"great": 2.0, "good": 1.0, "nice": 0.6, "fine": 0.3, "bad": -1.0, "poor": -1.5,
           "weak": -2.0}
THREAT = SynonymTable({"good": ["fine", "great"], "fine": ["nice"], "bad": ["poor"],
                       "poor": ["weak"]})
LISTS = {
    "q1": ["great great movie", "good plot", "fine film", "bad acting", "poor weak script"],
    "q2": ["good fine movie", "fine fine", "good", "nice", "bad"],
    "q3": ["great good", "great", "poor", "weak weak", "bad poor"],
}


def tiny_certificate(n=400, seed=0):
    sm = SmoothedRanker(TermWeightRanker(WEIGHTS, query_weight=0.0), THREAT, n_samples=n,
                        seed=seed, temperature=1.0)
    rows = [{"qid": q, "query": "movie", "docno": f"{q}-{i}", "text": t}
            for q, docs in LISTS.items() for i, t in enumerate(docs)]
    run = pd.DataFrame(rows)
    return sm, run, certify(sm, run, ks=(1, 2, 3), progress=False)


def exhaustive_attack_frame(sm, run, cert, attack_set=None) -> pd.DataFrame:
    """Every allowed substitution of every document, scored by the smoothed ranker against the
    other documents' fixed estimates: the strongest attack-results frame there is.
    ``attack_set(word)``: the attacker's options (default: the smoothed ranker's threat)."""
    attack_set = attack_set or sm.sets.attack_set
    from attacks.base import new_rank

    rows = []
    docs = cert.docs.assign(qid=cert.docs["qid"].astype(str))
    for qid, g in docs.groupby("qid"):
        sub = run[run["qid"] == qid]
        text = dict(zip(sub["docno"], sub["text"]))
        for r in g.itertuples(index=False):
            view = tokenize(text[r.docno])
            opts = [[match_case(w, x) for x in attack_set(w)] for w in view.words]
            others = g.loc[g["docno"] != r.docno, "g"].to_numpy()
            orig_rank = new_rank(r.g, others)
            best = orig_rank
            for combo in itertools.product(*opts):
                adv = view.replace(dict(enumerate(combo)))
                if adv == text[r.docno]:
                    continue
                s = float(sm.score_pairs(["movie"], [adv])[0])
                best = min(best, new_rank(s, others))
            rows.append({"qid": qid, "docno": r.docno, "orig_rank": orig_rank, "adv_rank": best,
                         "success": best < orig_rank})
    return pd.DataFrame(rows)


def test_certified_list_never_broken_by_exhaustive_attack(tmp_path):
    sm, run, cert = tiny_certificate()
    assert cert.frame["certified"].any() and not cert.frame["certified"].all()
    frame = exhaustive_attack_frame(sm, run, cert)
    assert frame["success"].any()  # the attack does move documents
    out = attack_outcome(cert, frame)
    assert out["sound"] and out["broken"] == [] and out["checks"] > 0
    assert out["rank_mismatch"] == 0
    paths = write_report(tmp_path, cert, meta={"ranker": "term-weight"}, attack_results=frame)
    html = Path(paths["html"]).read_text()
    assert "No certified list was broken" in html and "SOUNDNESS ALERT" not in html
    data = json.loads(Path(paths["json"]).read_text())
    assert data["summary"]["broken_certified"] == 0 and data["summary"]["sound"] is True


# asymmetric on purpose: as given, T_good = {good, fine, great} but T_fine = {fine, nice}
ASYM = SynonymTable({"good": ["fine", "great"], "fine": ["nice"], "bad": ["poor"],
                     "poor": ["weak"]}, symmetric=False, name="asym")


def test_symmetric_closure_contains_the_threat_and_its_reverse():
    from types import SimpleNamespace

    from attacks.threat import symmetric_closure

    docs = [t for ts in LISTS.values() for t in ts]
    col = SimpleNamespace(name="tiny", documents=pd.DataFrame({"text": docs}))
    closed = symmetric_closure(ASYM, col)
    vocab = {w.lower() for t in docs for w in tokenize(t).words}
    for w in vocab:
        for x in ASYM.neighbours(w):
            assert x in closed.neighbours(w) and w in closed.neighbours(x)
    assert set(closed.neighbours("nice")) == {"fine"}  # reverse pair of fine -> nice
    assert SmoothingSets(ASYM).radius("good fine") > 0  # as given: sets differ
    assert SmoothingSets(closed).radius("good fine") == 0  # closure: one small component


def test_certificate_on_closure_never_broken_by_attack_with_original_threat():
    """Certify against the symmetric closure, attack with the threat as given, exhaustively."""
    from types import SimpleNamespace

    from attacks.threat import symmetric_closure

    rows = [{"qid": q, "query": "movie", "docno": f"{q}-{i}", "text": t}
            for q, docs in LISTS.items() for i, t in enumerate(docs)]
    run = pd.DataFrame(rows)
    closed = symmetric_closure(ASYM, SimpleNamespace(name="tiny", documents=run[["text"]]))
    ranker = TermWeightRanker(WEIGHTS, query_weight=0.0)
    plain = certify(SmoothedRanker(ranker, ASYM, n_samples=400, seed=0, temperature=1.0), run,
                    ks=(1, 2, 3), progress=False)
    sm = SmoothedRanker(ranker, closed, n_samples=400, seed=0, temperature=1.0)
    cert = certify(sm, run, ks=(1, 2, 3), progress=False)
    assert cert.docs["delta"].max() == 0 < plain.docs["delta"].max()
    assert cert.frame["certified"].sum() > plain.frame["certified"].sum()
    frame = exhaustive_attack_frame(sm, run, cert, attack_set=SmoothingSets(ASYM).attack_set)
    out = attack_outcome(cert, frame)
    assert out["sound"] and out["broken"] == [] and out["checks"] > 0


def test_job_symmetric_by_default(synthetic, table_spec, tmp_path):
    closed = job(synthetic, table_spec, symmetric=True, out_dir=str(tmp_path / "c"))
    given = job(synthetic, table_spec, symmetric=False, out_dir=str(tmp_path / "g"))
    default = dict(ranker="term-weight", dataset=str(synthetic), k=5, ks=(1, 2, 3, 4),
                   n_samples=64, threat=table_spec, center=0, progress=False)
    assert _timing_free(run_certify_job(**default)) == _timing_free(
        run_certify_job(**default, symmetric=True))
    assert closed["median_radius"] <= given["median_radius"]
    mc = json.loads((tmp_path / "c" / "report.json").read_text())["meta"]
    mg = json.loads((tmp_path / "g" / "report.json").read_text())["meta"]
    assert mc["symmetric"] is True and mc["threat"].startswith("symmetric(")
    assert "--no-symmetric" not in mc["command"] and "--no-symmetric" in mg["command"]
    html = (tmp_path / "c" / "report.html").read_text()
    assert "also holds against the threat model as given" in html


def test_report_suggests_closure_when_radii_are_large(tmp_path):
    sm, run, cert = tiny_certificate(n=50)
    cert.docs["delta"] = 0.9  # as if every document had a large radius
    cert.frame["certified"] = cert.frame["trivial"]
    paths = write_report(tmp_path, cert, meta={"symmetric": False})
    assert "drop --no-symmetric" in Path(paths["md"]).read_text()


def test_broken_certified_list_is_reported_loudly(tmp_path):
    sm, run, cert = tiny_certificate()
    fr = cert.frame
    hit = fr[fr["certified"] & ~fr["trivial"]].iloc[0]
    qid, K = str(hit["qid"]), int(hit["K"])
    docs = cert.docs[cert.docs["qid"].astype(str) == qid].sort_values("rank")
    outside = docs.iloc[K]  # the document ranked K+1
    frame = pd.DataFrame([{"qid": qid, "docno": outside["docno"], "orig_rank": K + 1,
                           "adv_rank": 1, "success": True}])
    jsonl = tmp_path / "attack.jsonl"
    frame.to_json(jsonl, orient="records", lines=True)
    paths = write_report(tmp_path / "rep", cert, meta={}, attack_results=str(jsonl))
    html = Path(paths["html"]).read_text()
    assert "SOUNDNESS ALERT" in html and "verdict bad" in html
    data = json.loads(Path(paths["json"]).read_text())
    assert data["summary"]["broken_certified"] >= 1 and data["summary"]["sound"] is False
    assert {"qid": qid, "K": K, "docno": outside["docno"], "orig_rank": K + 1,
            "adv_rank": 1} in data["attack"]["broken"]
    assert "SOUNDNESS ALERT" in Path(paths["md"]).read_text()


def test_attack_results_need_rank_columns(tmp_path):
    _, _, cert = tiny_certificate(n=50)
    with pytest.raises(ValueError, match="orig_rank"):
        attack_outcome(cert, pd.DataFrame({"qid": ["q1"], "docno": ["q1-3"]}))


def test_job_checks_saved_attack_results(synthetic, table_spec, tmp_path):
    s = job(synthetic, table_spec)
    cert_json = tmp_path / "base"
    job(synthetic, table_spec, out_dir=str(cert_json))
    data = json.loads((cert_json / "report.json").read_text())
    rows = [{"qid": q["qid"], "docno": "d1", "orig_rank": 5, "adv_rank": 5, "success": False}
            for q in data["per_query"]]
    path = tmp_path / "attack.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    s2 = job(synthetic, table_spec, attack={"results": str(path)}, out_dir=str(tmp_path / "rep"))
    assert s2["attack_targets"] == len(rows) and s2["broken_certified"] == 0
    assert s2["CRQ@1"] == s["CRQ@1"]


def test_report_infinite_margins_are_null(tmp_path):
    sm = SmoothedRanker(TermWeightRanker(WEIGHTS), THREAT, n_samples=20, seed=0)
    run = pd.DataFrame({"qid": "q", "query": "movie", "docno": ["a", "b"],
                        "text": ["good", "bad"]})
    with pytest.warns(UserWarning, match="at most K documents"):
        cert = certify(sm, run, ks=(1, 2), progress=False)  # K=2 >= m: trivial
    paths = write_report(tmp_path, cert, meta={"ranker": "tw"})
    text = Path(paths["json"]).read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text)
    triv = [c for c in data["per_query"][0]["certificates"] if c["K"] == 2][0]
    assert triv["trivial"] and not triv["certified"] and triv["margin"] is None
    html = Path(paths["html"]).read_text()
    assert "trivial" in html and "not counted as certified" in html  # K >= m: the warning


# -- noisy training ----------------------------------------------------------------------------
NOISE_TABLE = SynonymTable({"good": ["fine", "great"], "fine": ["nice"], "bad": ["poor"],
                            "movie": ["film"]})
DOCS = ["A good movie with a bad plot", "Good GOOD good", "nothing to change here",
        "fine, nice and great", "the Movie was bad"]


def test_noise_transform_deterministic_and_keyed_by_text():
    t = noise_transform(NOISE_TABLE, seed=7)
    docs = list(DOCS)
    a = t(docs, 0, np.random.default_rng(0))
    assert docs == DOCS  # input untouched
    assert a == t(list(DOCS), 5, np.random.default_rng(1))  # same draw every epoch
    assert t(DOCS[::-1], 0, None) == a[::-1]  # independent of batch order
    assert noise_transform(NOISE_TABLE, seed=7)(DOCS, 0, None) == a
    assert a[2] == DOCS[2]
    many = [f"good movie {i}" for i in range(40)]
    assert noise_transform(NOISE_TABLE, seed=1)(many, 0, None) != \
        noise_transform(NOISE_TABLE, seed=2)(many, 0, None)


def test_noise_transform_fresh_per_epoch():
    t = noise_transform(NOISE_TABLE, fresh_per_epoch=True, seed=0)
    many = [f"good bad movie {i}" for i in range(40)]
    e0, e1 = t(many, 0, None), t(many, 1, None)
    assert e0 == t(many, 0, None) and e0 != e1
    assert t.describe()["fresh_per_epoch"] is True


def test_noise_transform_stays_within_smoothing_sets():
    t = noise_transform(NOISE_TABLE, fresh_per_epoch=True, seed=3)
    sets = t.sets
    changed = 0
    for epoch in range(5):
        for orig, new in zip(DOCS, t(DOCS, epoch, None)):
            vo, vn = tokenize(orig), tokenize(new)
            assert len(vo.words) == len(vn.words)
            for wo, wn in zip(vo.words, vn.words):
                assert wn.lower() in sets.smoothing_set(wo)
                assert wn == match_case(wo, wn.lower())  # capitalisation kept
                changed += wo != wn
            # everything but the words is unchanged
            assert [p for p in vo.pieces if not p.isalnum()] == \
                [p for p in vn.pieces if not p.isalnum()]
    assert changed > 0


def test_noise_transform_errors():
    with pytest.raises(ValueError, match="seed"):
        noise_transform(NOISE_TABLE, seed=-1)
    with pytest.raises(TypeError):
        noise_transform(NOISE_TABLE)("a good movie", 0, None)


def test_noise_transform_in_training(tiny_cross_path):
    from rankers import load_ranker
    from rankers.training import Group, TrainConfig, train_cross_encoder

    model = load_ranker(f"cross-encoder:{tiny_cross_path}", batch_size=4)
    seen = []
    t = noise_transform(SynonymTable({"honey": ["nectar"], "bees": ["bee"]}), seed=0)

    def spy(docs, epoch, rng):
        out = t(docs, epoch, rng)
        seen.append((list(docs), out))
        return out

    groups = [Group("how do bees make honey", ["bees make honey", "a volcano erupts lava"]),
              Group("what makes a volcano erupt", ["a volcano erupts lava", "bees make honey"])]
    hist = train_cross_encoder(model, groups, TrainConfig(epochs=2, batch_size=2), progress=False,
                               doc_transform=spy)
    assert len(hist["loss"]) == 2 and all(math.isfinite(x) for x in hist["loss"])
    assert seen[0][1] == seen[1][1]  # one draw per document, the same every epoch
    assert any(a != b for a, b in zip(*seen[0]))


# -- the notebook (slow tier) ------------------------------------------------------------------
@pytest.mark.slow
def test_certification_notebook_runs(tmp_path):
    from conftest import execute_notebook

    path = Path(__file__).resolve().parents[1] / "notebooks" / "certification.ipynb"
    nb = execute_notebook(path, tmp_path)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert (tmp_path / "certification_report" / "report.html").is_file()


def test_cli_certify_writes_report_and_prints_json(synthetic, table_spec, tmp_path, capsys,
                                                  monkeypatch):
    from ranklab.cli import main

    monkeypatch.chdir(tmp_path)  # without --out the report goes to runs/certify/<job id>

    base = ["certify", "--ranker", "term-weight", "--dataset", str(synthetic), "--k", "5",
            "--n-samples", "32", "--ks", "1", "2", "--threat", table_spec, "--center", "0",
            "--quiet", "--json"]
    assert main(base + ["--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    s = json.loads(out.strip().splitlines()[-1])
    assert {"CRQ@1", "CRQ@2", "n_forward"} <= set(s) and s["center"] == 0.0
    assert "CRQ" in out and (tmp_path / "r" / "report.html").is_file()
    meta = json.loads((tmp_path / "r" / "report.json").read_text())["meta"]
    assert meta["symmetric"] is True
    assert main(base + ["--no-symmetric", "--mode", "adaptive", "--n0", "8"]) == 0
    s2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s2["mode"] == "adaptive" and s2["median_radius"] >= s["median_radius"]
    assert Path(s2["report"]).resolve().is_relative_to(tmp_path.resolve() / "runs" / "certify")
    assert main(base + ["--center", "middle"]) == 2
    assert "--center" in capsys.readouterr().err


# -- modes compared, Wilson intervals, certified radii (issue 13) --------------------------------
def test_wilson_interval_golden():
    from ranklab.report import wilson_interval

    lo, hi = wilson_interval(5, 20)  # p = 0.25, n = 20 (95 %)
    assert lo == pytest.approx(0.1119, abs=1e-4) and hi == pytest.approx(0.4687, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_compare_modes_same_lists_and_report_section(tmp_path):
    from defenses.masking import MaskedSmoothedRanker
    from ranklab.report import compare_modes

    sm, run, cert = tiny_certificate(n=200)
    masked = MaskedSmoothedRanker(TermWeightRanker(WEIGHTS, query_weight=0.0), keep_count=1,
                                  mask="drop", n_samples=200)
    mcert = certify(masked, run, ks=(1, 2, 3), R=1, progress=False)
    table = compare_modes({"synonym": cert, "mask": mcert})
    assert set(table["mode"]) == {"synonym", "mask"} and len(table) == 6
    assert (table["ci_low"] <= table["CRQ"]).all() and (table["CRQ"] <= table["ci_high"]).all()
    assert set(table["smoothing"]) == {"synonym", "mask"}
    other = certify(sm, run[run["qid"] != run["qid"].iloc[0]], ks=(1, 2, 3), progress=False)
    with pytest.raises(ValueError, match="same lists"):
        compare_modes({"a": cert, "b": other})
    paths = write_report(tmp_path, mcert, meta={"ranker": "term-weight"}, compare={"synonym": cert})
    data = json.loads(Path(paths["json"]).read_text())
    assert data["summary"]["smoothing"] == "mask"
    assert {r["mode"] for r in data["modes"]} == {"mask", "synonym"}
    assert all("ci_low" in r and "median_radius_words" in r for r in data["crq"])
    assert set(data["certified_radius"]) <= {"1", "2", "3"}
    md = Path(paths["md"]).read_text()
    assert "Smoothing modes compared" in md and "masking smoothing" in md.lower()
    assert "Smoothing modes compared" in Path(paths["html"]).read_text()
