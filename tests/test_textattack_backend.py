"""The word-substitution attack expressed in TextAttack: offline import, a valid frame within
budget on a tiny instance, the same invariants as the lab's attack."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

import importlib.util

if importlib.util.find_spec("textattack") is None:  # optional extra (never import it directly:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # it needs NLTK data)
        raise RuntimeError("textattack is missing in CI: .ci/setup.sh installs the textattack extra")
    pytest.skip("textattack not installed (pip install -e .[textattack])",
                allow_module_level=True)

from attacks import TextAttackWordSubstitution  # noqa: E402
from attacks.base import RESULT_COLUMNS, NoSubstitutes  # noqa: E402
from attacks.text import changed_positions, words  # noqa: E402
from attacks.threat import SynonymTable  # noqa: E402
from rankers import Oracle, TermWeightRanker  # noqa: E402

QUERY = "how do bees make honey"
DOCS = {
    "d0": "bees make honey from nectar in the hive",
    "d1": "honey and nectar from a large hive",
    "d2": "the queen bee and a big colony",
    "d3": "a small cat sat on the mat",
    "d4": "the slow dog and the small cat in the garden",
    "d5": "a good cup of cold coffee",
    "d6": "lava and ash from the crater",
}
WEIGHTS = {"honey": 2.0, "nectar": 1.5, "large": 1.0, "great": 1.2, "fine": 0.8, "fast": 0.6,
           "tiny": 0.4, "garden": 0.3, "hot": 0.5}
TABLE = {"big": ["large", "great"], "good": ["great", "fine"], "small": ["tiny", "little"],
         "slow": ["quick", "fast"], "cat": ["dog"], "mat": ["garden"], "cold": ["hot"],
         "cup": ["mug"]}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def victim():
    return TermWeightRanker(WEIGHTS, query_weight=0.5)


@pytest.fixture(scope="module")
def run(victim):
    return victim.rank(QUERY, list(DOCS.values()), list(DOCS), qid="q1").assign(query=QUERY)


@pytest.fixture(scope="module")
def threat():
    return SynonymTable(TABLE)


TARGETS = pd.DataFrame({"qid": ["q1"] * 3, "docno": ["d3", "d4", "d5"]})


def test_import_offline_restores_environment():
    from attacks.textattack_backend import import_textattack

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    before = {k: os.environ.get(k) for k in ("HF_HOME", "XDG_CACHE_HOME", "TA_CACHE_DIR",
                                             "PYTORCH_TRANSFORMERS_CACHE")}
    ta = import_textattack()
    assert ta.__name__ == "textattack"
    assert {k: os.environ.get(k) for k in before} == before
    import nltk

    assert "the" in nltk.corpus.stopwords.words("english")


@pytest.mark.parametrize("access,search", [("score", "greedy-wir"), ("rank", "greedy-wir"),
                                           ("score", "greedy")])
def test_textattack_frame_within_budget(victim, run, threat, access, search):
    run_before = run.copy(deep=True)
    oracle = Oracle(victim, access=access)
    atk = TextAttackWordSubstitution(threat, max_words=2, max_pp=0.5, query_budget=6,
                                     search=search)
    res = atk.run(oracle, None, TARGETS, run=run, progress=False)
    pd.testing.assert_frame_equal(run, run_before)
    assert list(res.columns) == RESULT_COLUMNS and len(res) == 3
    assert (res["queries_used"] <= 6).all()
    assert res["queries_used"].sum() == oracle.queries_used
    assert res["success"].any()
    for r in res.itertuples():
        others = run.loc[run.docno != r.docno, "score"].to_numpy()
        s = victim.score(QUERY, [r.adv_text])[0]
        assert s == pytest.approx(r.adv_score)
        assert r.adv_rank == 1 + int((others >= s).sum())
        assert r.success == (r.adv_rank < r.orig_rank)
        if r.success:
            assert r.adv_score > r.orig_score
        assert r.n_changed <= 2 and r.pp <= 0.5
        ow, aw = words(r.orig_text), words(r.adv_text)
        for p in changed_positions(r.orig_text, r.adv_text):
            assert aw[p].lower() in threat.neighbours(ow[p])
        assert r.method == f"textattack-{search}"


def test_textattack_oracle_budget_and_goal(victim, run, threat):
    oracle = Oracle(victim, access="score", budget=5)
    atk = TextAttackWordSubstitution(threat, max_words=3, max_pp=0.5)
    res = atk.run(oracle, None, TARGETS, run=run, progress=False)
    assert oracle.queries_used <= 5 and res["budget_exhausted"].any()
    topk = TextAttackWordSubstitution(threat, max_words=3, max_pp=0.5, goal="topk", goal_k=3)
    res = topk.run(Oracle(victim, access="score"), None, TARGETS, run=run, progress=False)
    assert len(res) == 3
    with pytest.raises(NoSubstitutes):
        TextAttackWordSubstitution(SynonymTable({"zebra": ["horse"]})).attack(
            Oracle(victim), QUERY, "d3", run)
    with pytest.raises(ValueError, match="search"):
        TextAttackWordSubstitution(threat, search="beam")


def test_attack_job_both_methods(synthetic, tiny_cross_path, tmp_path, monkeypatch):
    """run_attack_job end to end on a BEIR folder: white-box and imitation surrogates, both
    methods, JSONL rows written per target."""
    from ranklab.attack_job import run_attack_job

    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "syn.json"
    table.write_text(json.dumps({"bees": ["bee"], "honey": ["nectar"], "volcano": ["crater"],
                                 "coffee": ["espresso"], "hot": ["cold"], "make": ["produce"],
                                 "erupts": ["explodes"], "flour": ["wheat"]}))
    out = tmp_path / "rows.jsonl"
    common = dict(ranker=str(tiny_cross_path), dataset=str(synthetic), targets="hard5",
                  queries=2, threat=f"table:{table}", k=6, max_words=2, max_pp=0.5,
                  budget=5, similarity=False, progress=False, out=str(out))
    frame, summary = run_attack_job(method="word-substitution", surrogate="victim", **common)
    assert len(frame) == summary["n_targets"] > 0
    assert (frame["queries_used"] <= 5).all()
    frame2, summary2 = run_attack_job(method="word-substitution", surrogate="imitation",
                                      surrogate_base=str(tiny_cross_path), surrogate_k=3,
                                      surrogate_queries=1, surrogate_max_length=64, **common)
    assert summary2["imitation_victim_queries"] == 6
    assert not set(summary2["imitation"]) & {"qids"}
    assert "agreement" in summary2
    frame3, summary3 = run_attack_job(method="textattack", **common)
    assert (frame3["queries_used"] <= 5).all()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(frame) + len(frame2) + len(frame3)
    assert {"job", "qid", "docno", "adv_rank", "substitutions"} <= set(rows[0])
    json.dumps(summary3, default=str)
