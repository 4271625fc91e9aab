"""Soundness and bad input (issue 10): one test per case, each failing before its fix."""
from __future__ import annotations

import errno
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from attacks.threat import SynonymTable, match_case
from defenses.certify import certify
from defenses.smoothing import SmoothedRanker, SmoothingSets
from rankers.base import Ranker
from rankers.bm25 import BM25Ranker
from rankers.lexical import TermWeightRanker

QUERY = "query"
ROOT = Path(__file__).resolve().parents[1]


# == 1. soundness: the radius is computed on what the ranker sees ==============================
class CaseSensitiveRanker(Ranker):
    """``sum of weights[word]`` over the ``\\w+`` words of the document, letter case kept."""

    def __init__(self, weights):
        self.weights, self.name = dict(weights), "case-sensitive"

    def _score_pairs(self, queries, docs):
        return np.array([sum(self.weights.get(w, 0.0) for w in re.findall(r"\w+", d))
                         for d in docs])


class Exact:
    """Exact smoothed scores by enumerating every draw; every text the attacker may write."""

    def __init__(self, sm: SmoothedRanker):
        self.sm, self.memo = sm, {}

    def g(self, text: str) -> float:
        if text not in self.memo:
            sets, view = self.sm.sets, tokenize(text)
            pos = [i for i, w in enumerate(view.words) if sets.has_set(w)]
            opts = [[match_case(view.words[i], t) for t in sets.smoothing_set(view.words[i])]
                    for i in pos]
            texts = [view.replace(dict(zip(pos, c))) for c in itertools.product(*opts)]
            f = self.sm.squash_scores(self.sm.base.score_pairs([QUERY] * len(texts), texts))
            self.memo[text] = float(np.mean(f))
        return self.memo[text]

    def attacked(self, text: str):
        sets, view = self.sm.sets, tokenize(text)
        opts = [[match_case(w, x) for x in sets.attack_set(w)] for w in view.words]
        for c in itertools.product(*opts):
            yield view.replace(dict(enumerate(c)))

    def broken(self, texts, order, K) -> bool:
        """True when an allowed substitution of an outside document reaches the top K."""
        floor = min(self.g(texts[i]) for i in order[:K])
        return any(self.g(a) >= floor for j in order[K:] for a in self.attacked(texts[j]))


def certify_and_search(sm, lists, ks=(1, 2), **kw):
    run = pd.DataFrame([{"qid": q, "query": QUERY, "docno": f"{q}-{i}", "text": t}
                        for q, docs in lists.items() for i, t in enumerate(docs)])
    cert = certify(sm, run, ks=ks, progress=False, **kw)
    ex, n_cert, broken = Exact(sm), 0, []
    for (qid, K), row in cert.frame.set_index(["qid", "K"]).iterrows():
        if not row["certified"]:
            continue
        n_cert += 1
        d = cert.docs[cert.docs["qid"] == qid].sort_values("rank")
        order = [int(x.split("-")[1]) for x in d["docno"]]
        if ex.broken(lists[qid], order, K):
            broken.append((qid, K))
    return cert, n_cert, broken


# one word set per case of the issue; the sets are equal across each attack set, so the old
# lower-case rule gave radius 0 and certified the list
CASES = {
    # an ALL-CAPS word and a one-letter neighbour: "PHONE" -> "E", whose draws are Title case
    "one-letter": ({"phone": ["e"], "e": ["phone"]}, {"Phone": 10.0, "PHONE": -10.0,
                                                      "E": -10.0, "good": -1.0},
                   CaseSensitiveRanker, ["good", "PHONE"]),
    # "groß" in capitals is "GROSS", read back as "gross" (not in the vocabulary)
    "sharp-s": ({"big": ["groß"], "groß": ["big"]}, {"gross": 10.0, "big": -10.0, "good": 2.0},
                TermWeightRanker, ["good", "BIG"]),
    # dotless i: "ılık" -> "ILIK" -> "ilik"
    "dotless-i": ({"warm": ["ılık"], "ılık": ["warm"]}, {"ilik": 10.0, "warm": -10.0,
                                                        "good": 2.0},
                  TermWeightRanker, ["good", "WARM"]),
    # a capital form that is not one word: "ǰa".upper() == "J̌A" (J, a combining mark, A)
    "splits": ({"hot": ["ǰa"], "ǰa": ["hot"]}, {"j": 10.0, "hot": -10.0, "good": 2.0},
               TermWeightRanker, ["good", "HOT"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_letter_case_write_back_never_breaks_a_certificate(case):
    table, weights, kind, docs = CASES[case]
    base = kind(weights) if kind is CaseSensitiveRanker else kind(weights, query_weight=0.0)
    sm = SmoothedRanker(base, SmoothingSets(SynonymTable(table), sets=table), n_samples=1000)
    cert, n_cert, broken = certify_and_search(sm, {"q": docs}, ks=(1,))
    assert not broken, f"{case}: certified lists broken by exhaustive search: {broken}"
    # the attacked copy does overtake: a radius of 0 (the old rule) would certify a false claim
    attacked = [a for a in Exact(sm).attacked(docs[1]) if a != docs[1]]
    assert max(Exact(sm).g(a) for a in attacked) > Exact(sm).g(docs[0])
    assert cert.docs["delta"].max() > 0


def random_case_lists(seed=0, n_lists=40):
    rng = np.random.default_rng(seed)
    attackable = ["phone", "PHONE", "Phone", "e", "E", "a", "A", "groß", "GROSS", "Groß",
                  "big", "BIG", "ılık", "ILIK", "warm", "Warm", "hot", "HOT"]
    filler = ["the", "THE", "call", "Call"]
    lists = {}
    for q in range(n_lists):
        docs: set[str] = set()
        size = int(rng.integers(3, 5))
        while len(docs) < size:
            w = list(rng.choice(attackable, int(rng.choice([1, 2], p=[.6, .4])))) + list(
                rng.choice(filler, int(rng.integers(0, 2))))
            rng.shuffle(w)
            docs.add(" ".join(w))
        lists[f"q{q}"] = sorted(docs)
    return lists


# a non-ASCII vocabulary with one-letter neighbours; sets equal within each group (so the old
# lower-case rule gave radius 0), except "hot"/"cold" (unequal sets, radii from set sizes)
VOCAB = {"phone": ["e", "a"], "e": ["phone", "a"], "a": ["phone", "e"], "big": ["groß"],
         "groß": ["big"], "warm": ["ılık"], "ılık": ["warm"], "hot": ["ǰa", "cold"],
         "ǰa": ["hot"], "cold": ["hot"]}


@pytest.mark.parametrize("mode", ["rigorous", "adaptive"])
def test_case_sensitive_scorer_non_ascii_vocabulary_exhaustive(mode):
    rng = np.random.default_rng(1)
    words = sorted({match_case(t, w) for w in [*VOCAB, "gross", "ilik", "j", "the", "call"]
                    for t in ("a", "A", "AA")})
    weights = {w: float(rng.normal(0, 5)) for w in words}
    sm = SmoothedRanker(CaseSensitiveRanker(weights), SmoothingSets(SynonymTable(VOCAB),
                                                                    sets=VOCAB),
                        n_samples=2000, temperature=1.0)
    cert, n_cert, broken = certify_and_search(sm, random_case_lists(seed=1), ks=(1, 2),
                                              mode=mode)
    assert not broken, broken
    assert n_cert >= 10  # not vacuous


def test_q_depends_on_what_is_written():
    sets = SmoothingSets(SynonymTable(CASES["one-letter"][0]), sets=CASES["one-letter"][0])
    assert sets.q("phone") == 1.0 and sets.q("Phone") == 1.0  # lower and Title round-trip
    assert sets.q("PHONE") == 0.5  # "E" is drawn as "Phone"/"E", "PHONE" as "PHONE"/"E"
    for case in ("sharp-s", "dotless-i"):
        t = CASES[case][0]
        w = next(iter(t))
        s2 = SmoothingSets(SynonymTable(t), sets=t)
        assert s2.q(w) == 1.0 and s2.q(w.upper()) == 0.5
    t = CASES["splits"][0]
    assert SmoothingSets(SynonymTable(t), sets=t).q("HOT") == 0.0


def test_unfitted_bm25_is_refused_by_certification():
    assert not BM25Ranker().pure and BM25Ranker(["a text", "another"]).pure
    sm = SmoothedRanker(BM25Ranker(), SynonymTable({"good": ["fine"]}), n_samples=10)
    run = pd.DataFrame({"qid": "q", "query": "good", "docno": ["a", "b"],
                        "text": ["good film", "fine film"]})
    with pytest.raises(ValueError, match=r"depend on.*other pairs.*BM25Ranker\(corpus"):
        certify(sm, run, ks=(1,), progress=False)
    fitted = SmoothedRanker(BM25Ranker(["good film", "fine film"]),
                            SynonymTable({"good": ["fine"]}), n_samples=10)
    certify(fitted, run, ks=(1,), progress=False)  # a fitted one is accepted


def test_k_at_least_list_length_is_not_certified():
    sm = SmoothedRanker(TermWeightRanker({"good": 5.0}), SynonymTable({"bad": ["poor"]}),
                        n_samples=100)
    run = pd.DataFrame({"qid": "q", "query": "movie", "docno": ["a", "b"],
                        "text": ["good movie", "the plot"]})
    with pytest.warns(UserWarning, match="at most K documents.*K=3: 1 of 1, K=5: 1 of 1"):
        cert = certify(sm, run, ks=(1, 3, 5), progress=False)
    f = cert.frame.set_index("K")
    assert f.loc[1, "certified"] and not f.loc[3, "certified"] and not f.loc[5, "certified"]
    assert f.loc[3, "trivial"] and f.loc[5, "trivial"]
    assert cert.summary()["crq"] == {1: 1.0, 3: 0.0, 5: 0.0}
    assert cert.params["short_lists"] == {1: 0, 3: 1, 5: 1}


# == 2. sweeps: results never lost, never stale, never shared ===================================
def _sweep_cfg(dataset, ks=(1,)):
    return {"name": "t", "rankers": ["bm25"], "datasets": [str(dataset)], "seeds": [0],
            "studies": [{"kind": "evaluate", "params": {"measures": ["nDCG@10"]},
                         "grid": {"k": list(ks)}}]}


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("fault", ["enospc", "short-zero"])
def test_sweep_full_disk_fails_loudly_without_a_torn_row(synthetic, tmp_path, monkeypatch, fault):
    from ranklab import sweep

    out = tmp_path / "out"
    sweep.run_sweep(_sweep_cfg(synthetic), out, progress=False)  # one row written for real
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd, data):  # half of the bytes go through, then the disk is full
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        if fault == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return 0

    monkeypatch.setattr(sweep.os, "write", full_disk)
    with pytest.raises(OSError, match=r"results\.jsonl.*free disk space"):
        sweep.run_sweep(_sweep_cfg(synthetic, ks=(1, 2)), out, progress=False)
    monkeypatch.undo()
    rows = _lines(out / "results.jsonl")  # every line parses: the torn half was removed
    assert len(rows) == 1
    table = sweep.run_sweep(_sweep_cfg(synthetic, ks=(1, 2)), out, progress=False)
    assert len(table) == 2


def test_sweep_keeps_a_complete_last_row_without_newline(synthetic, tmp_path):
    from ranklab.sweep import run_sweep

    out = tmp_path / "out"
    run_sweep(_sweep_cfg(synthetic), out, progress=False)
    res = out / "results.jsonl"
    row = _lines(res)[0]
    res.write_text(json.dumps({**row, "marker": "kept"}))  # no trailing newline
    run_sweep(_sweep_cfg(synthetic, ks=(1, 2)), out, progress=False)
    rows = _lines(res)
    assert len(rows) == 2 and [r["job_id"] for r in rows].count(row["job_id"]) == 1
    assert rows[0].get("marker") == "kept"  # not deleted and rerun


def test_sweep_output_folder_is_locked(synthetic, tmp_path):
    from ranklab.sweep import SweepLockedError, _FolderLock, run_sweep

    out = tmp_path / "out"
    out.mkdir()
    with _FolderLock(out):
        with pytest.raises(SweepLockedError, match=rf"pid {os.getpid()} on host .*another --out"):
            run_sweep(_sweep_cfg(synthetic), out, progress=False)
    assert not (out / "results.jsonl").exists()
    assert len(run_sweep(_sweep_cfg(synthetic), out, progress=False)) == 1  # released


def test_sweep_lock_held_by_another_process(synthetic, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = ("import sys, time; from pathlib import Path; from ranklab.sweep import _FolderLock\n"
            "with _FolderLock(Path(sys.argv[1])):\n    print('locked', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        from ranklab.sweep import SweepLockedError, run_sweep

        with pytest.raises(SweepLockedError, match=rf"pid {proc.pid} "):
            run_sweep(_sweep_cfg(synthetic), out, progress=False)
    finally:
        proc.kill()
        proc.wait()


def test_sweep_job_id_changes_when_the_qrels_change(synthetic, tmp_path):
    from ranklab.sweep import expand, run_sweep

    out = tmp_path / "out"
    first = run_sweep(_sweep_cfg(synthetic), out, progress=False)
    ids = [j.job_id for j in expand(_sweep_cfg(synthetic))]
    q = synthetic / "qrels" / "test.tsv"
    q.write_text(q.read_text().replace("q1\td2\t1", "q1\td2\t0"))
    assert [j.job_id for j in expand(_sweep_cfg(synthetic))] != ids
    second = run_sweep(_sweep_cfg(synthetic), out, progress=False)
    assert len(second) == 2  # recomputed, not reused
    assert second["nDCG@10"].iloc[1] != first["nDCG@10"].iloc[0]


def test_sweep_variables_never_come_from_the_environment(tmp_path, monkeypatch):
    from ranklab.sweep import ConfigError, load_config

    p = tmp_path / "c.yaml"
    p.write_text("datasets: ['${SECRET_TOKEN}']\nstudies: [{kind: evaluate}]\n")
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    with pytest.raises(ConfigError, match="--var SECRET_TOKEN=.*not read"):
        load_config(p)
    assert load_config(p, {"SECRET_TOKEN": "demo"})["datasets"] == ["demo"]


# == 3. data read wrongly ======================================================================
def _write_qrels(folder, text):
    (folder / "qrels" / "test.tsv").write_text(text)


def test_qrels_without_header_keeps_the_first_judgment(synthetic):
    from ranklab.collections import load_collection

    _write_qrels(synthetic, "q1\td1\t2\nq1\td2\t1\nq2\td3\t2\n")
    col = load_collection(str(synthetic))
    assert len(col.qrels) == 3 and col.qrels.iloc[0].tolist() == ["q1", "d1", 2]


def test_qrels_header_by_names_and_trec_format(synthetic):
    from ranklab.collections import read_qrels

    _write_qrels(synthetic, "query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    assert read_qrels(synthetic / "qrels" / "test.tsv").values.tolist() == [["q1", "d1", 2]]
    _write_qrels(synthetic, "q1 0 d1 2\nq2 0 d3 1.0\n")
    assert read_qrels(synthetic / "qrels" / "test.tsv").values.tolist() == [
        ["q1", "d1", 2], ["q2", "d3", 1]]


def test_qrels_float_label_is_rejected_with_file_and_line(synthetic):
    from ranklab.collections import CollectionError, load_collection

    _write_qrels(synthetic, "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1.5\n")
    with pytest.raises(CollectionError, match=r"test\.tsv:3: relevance label '1\.5' is not an "
                                              r"integer"):
        load_collection(str(synthetic))


def test_qrels_conflicting_duplicate_is_rejected(synthetic):
    from ranklab.collections import CollectionError, load_collection, read_qrels

    _write_qrels(synthetic, "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\nq1\td1\t0\n")
    with pytest.raises(CollectionError, match=r"test\.tsv:4: .*'q1'.*'d1'.*judged 0 here and 2 "
                                              r"at line 2"):
        load_collection(str(synthetic))
    _write_qrels(synthetic, "q1\td1\t2\nq1\td1\t2\n")
    with pytest.warns(UserWarning, match="repeated"):
        assert len(read_qrels(synthetic / "qrels" / "test.tsv")) == 1


@pytest.mark.parametrize("content,match", [
    (b"", r"corpus\.jsonl holds no documents"),
    (b'{"_id": "d1", "text": "bees"}\n{"text": "no id"}\n', r"corpus\.jsonl:2: the document has "
                                                          r"no '_id'"),
    (b'{"_id": "d1", "text": "bees"}\n{"_id": "d2", "text": "caf\xe9"}\n',
     r"corpus\.jsonl:2: not UTF-8 \(byte 0xe9"),
    (b'{"_id": "d1", "text": ["a"]}\n', r"corpus\.jsonl:1: 'text' must be a string"),
])
def test_corpus_errors_name_file_and_line(synthetic, content, match):
    from ranklab.collections import CollectionError, load_collection

    (synthetic / "corpus.jsonl").write_bytes(content)
    with pytest.raises(CollectionError, match=match):
        load_collection(str(synthetic))


@pytest.mark.parametrize("line,match", [
    ("q1 Q0 d1 1 2.5", r"run1\.trec:2: a TREC run line has 6 fields"),
    ("q1 Q0 d1 one 2.5 t", r"run1\.trec:2: rank 'one' is not an integer"),
    ("q1 Q0 d1 1 nan t", r"run1\.trec:2: score 'nan' is not a finite number"),
])
def test_malformed_trec_run_names_file_and_line(synthetic, line, match):
    from ranklab.collections import CollectionError, load_collection

    (synthetic / "runs").mkdir()
    (synthetic / "runs" / "run1.trec").write_text(f"q1 Q0 d2 1 3.0 t\n{line}\n")
    with pytest.raises(CollectionError, match=match):
        load_collection(str(synthetic))


def test_wordless_queries_are_left_out_with_a_warning(synthetic):
    from ranklab.collections import load_collection

    with open(synthetic / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q8", "text": "?!"}) + "\n")
        f.write(json.dumps({"_id": "q9", "text": " "}) + "\n")
    _write_qrels(synthetic, "q1\td1\t2\nq8\td2\t1\nq9\td3\t1\n")
    col = load_collection(str(synthetic))
    with pytest.warns(UserWarning, match=r"2 of 5 queries have no word.*left out"):
        run = col.candidates("bm25", k=3)
    assert set(run["qid"]) == {"q1", "q2", "q3"}


def test_queries_matching_nothing_get_no_file_order_list(synthetic):
    from ranklab.collections import load_collection

    with open(synthetic / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q8", "text": "the of and"}) + "\n")  # stop words only
        f.write(json.dumps({"_id": "q9", "text": "zebra"}) + "\n")  # in no document
    col = load_collection(str(synthetic))
    with pytest.warns(UserWarning, match=r"2 queries match no document.*left out"):
        run = col.candidates("bm25", k=3)
    assert set(run["qid"]) == {"q1", "q2", "q3"}


def test_evaluate_partial_run_says_how_many_queries():
    import ranklab

    qrels = pd.DataFrame({"qid": [f"q{i}" for i in range(10)], "docno": "d", "label": 1})
    run = pd.DataFrame({"qid": ["q0", "q1"], "docno": ["d", "x"], "score": [1.0, 1.0]})
    with pytest.warns(UserWarning, match=r"ranks 2 of the 10 queries.*means over those 2"):
        res = ranklab.evaluate(run, qrels, ["RR@10"])
    assert res == {"RR@10": 0.5} and res.n_queries == 2 and res.n_qrels_queries == 10
    assert len(res.missing) == 8


def test_evaluate_one_string_is_one_measure_and_trec_names():
    import ranklab

    qrels = pd.DataFrame({"qid": ["q0", "q0"], "docno": ["a", "b"], "label": [1, 0]})
    run = pd.DataFrame({"qid": "q0", "docno": ["b", "a"], "score": [2.0, 1.0]})
    assert ranklab.evaluate(run, qrels, "RR@10") == {"RR@10": 0.5}
    got = ranklab.evaluate(run, qrels, ["ndcg_cut_10", "recip_rank", "map", "P_10"])
    assert list(got) == ["nDCG@10", "RR", "AP", "P@10"]
    assert got["RR"] == 0.5 and got["AP"] == 0.5 and got["P@10"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown measure 'ndgc@10'.*ndcg_cut_10"):
        ranklab.evaluate(run, qrels, "ndgc@10")


def test_evaluate_rejects_nan_scores():
    import ranklab

    qrels = pd.DataFrame({"qid": ["q0"], "docno": ["a"], "label": [1]})
    run = pd.DataFrame({"qid": "q0", "docno": ["a", "b"], "score": [float("nan"), 1.0]})
    with pytest.raises(ValueError, match=r"1 score\(s\) .*NaN.*docno 'a'"):
        ranklab.evaluate(run, qrels, ["nDCG@10"])


@pytest.mark.parametrize("call", [
    lambda r: r.score_pairs("abc", "xyz"),
    lambda r: r.score_pairs(["abc"], "x"),
    lambda r: r.score("query", "a document"),
    lambda r: r.rank("query", "a document"),
])
def test_score_pairs_refuses_a_lone_string(call):
    from rankers.base import RankerError

    with pytest.raises(RankerError, match="single str.*split into characters"):
        call(TermWeightRanker({"a": 1.0}))


# == 4. loading and training errors ============================================================
def _copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_broken_config_json_names_the_path(tiny_cross_path, tmp_path):
    from rankers.loading import ModelLoadError, is_loadable_model_dir, load_ranker

    p = _copy_model(tiny_cross_path, tmp_path / "m")
    (p / "config.json").write_text('{"architectures": ["BertForSequenceClassification"],')
    for spec in (f"cross-encoder:{p}", str(p)):
        with pytest.raises(ModelLoadError, match=rf"{re.escape(str(p))}/config\.json is not "
                                                 r"valid JSON.*damaged"):
            load_ranker(spec)
    assert not is_loadable_model_dir(p)


def test_truncated_weights_name_the_path(tiny_cross_path, tmp_path):
    from rankers.loading import ModelLoadError, is_loadable_model_dir, load_ranker

    p = _copy_model(tiny_cross_path, tmp_path / "m")
    w = p / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=rf"{re.escape(str(w))} is damaged.*truncated"):
        load_ranker(f"cross-encoder:{p}")
    assert not is_loadable_model_dir(p)
    assert is_loadable_model_dir(tiny_cross_path)


def test_truncated_weights_cli_exits_2_with_the_path(tiny_cross_path, synthetic, tmp_path, capsys):
    from ranklab.cli import main

    p = _copy_model(tiny_cross_path, tmp_path / "m")
    w = p / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    assert main(["evaluate", "--ranker", f"cross-encoder:{p}", "--dataset", str(synthetic),
                 "--k", "3"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors is damaged" in err and "Traceback" not in err


def test_hub_id_offline_says_to_pass_a_local_folder(monkeypatch):
    from rankers.loading import ModelLoadError, load_ranker

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"'cross-encoder:no-such-org/no-such-model'.*not a "
                                             r"local folder.*hub.*Offline, pass the path of a "
                                             r"local model folder"):
        load_ranker("cross-encoder:no-such-org/no-such-model")


def test_encoder_without_trained_head_refuses_to_load_as_cross_encoder(tiny_bi_path):
    from rankers.loading import ModelLoadError, is_loadable_model_dir, load_ranker

    with pytest.raises(ModelLoadError, match=r"no trained ranking head.*random.*bi-encoder:"):
        load_ranker(f"cross-encoder:{tiny_bi_path}")
    assert not is_loadable_model_dir(tiny_bi_path, "cross-encoder")
    assert is_loadable_model_dir(tiny_bi_path, "bi-encoder")
    assert load_ranker(f"bi-encoder:{tiny_bi_path}").score("bees", ["bees make honey"]).shape == (1,)


def test_trained_models_still_load(tiny_cross_path, tmp_path):
    from rankers.loading import is_loadable_model_dir, load_ranker
    from rankers.training import new_cross_encoder, save_cross_encoder

    fresh = new_cross_encoder(str(tiny_cross_path), seed=0)  # a seq-class checkpoint keeps its head
    out = save_cross_encoder(fresh, tmp_path / "saved", {"note": "test"})
    assert is_loadable_model_dir(out)
    assert type(load_ranker(str(out))).__name__ == "CrossEncoder"


@pytest.mark.parametrize("kw,match", [({"epochs": 0}, "epochs must be an integer >= 1.*never "
                                                      "saved"),
                                      ({"epochs": 1.5}, "epochs"), ({"batch_size": 0}, "batch_size"),
                                      ({"lr": 0.0}, "lr"), ({"warmup": 2.0}, "warmup")])
def test_train_config_rejects_bad_values_before_any_work(kw, match):
    from rankers.training import TrainConfig

    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_training_without_groups_fails_before_any_step(tiny_cross_path):
    import torch

    from rankers.training import Group, TrainConfig, new_cross_encoder, train_cross_encoder

    m = new_cross_encoder(str(tiny_cross_path), seed=0)
    before = [t.detach().clone() for t in m.model.parameters()]
    with pytest.raises(ValueError, match=r"no training groups.*\(1 given\).*nothing was trained"):
        train_cross_encoder(m, [Group("q", ["only a positive"])], TrainConfig(), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, m.model.parameters()))


# == end to end through the CLI (flags that keep their spelling) ===============================
def test_cli_evaluate_float_label_exits_2_naming_file_and_line(synthetic, capsys):
    from ranklab.cli import main

    _write_qrels(synthetic, "q1\td1\t2\nq1\td2\t0.5\n")
    assert main(["evaluate", "--ranker", "bm25", "--dataset", str(synthetic), "--k", "3"]) == 2
    err = capsys.readouterr().err
    assert "test.tsv:2: relevance label '0.5' is not an integer" in err


def test_cli_sweep_on_a_locked_folder_exits_2_naming_the_holder(synthetic, tmp_path, capsys):
    from ranklab.cli import main
    from ranklab.sweep import _FolderLock

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_sweep_cfg(synthetic)))
    out = tmp_path / "out"
    out.mkdir()
    with _FolderLock(out):
        assert main(["sweep", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "another sweep" in err
    assert not (out / "results.jsonl").exists()
