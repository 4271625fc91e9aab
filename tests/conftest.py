"""Shared fixtures: tiny BERT models built from a config (word-level vocabulary), saved to a
temporary folder once per session and loaded through the lab's real loading code; the packaged
MiniLM model for the `slow` tier; a small synthetic collection."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd
import pytest

WORDS = sorted(set("""
the a an of and to in on for with is are was be by at from as it this that these those
cat cats dog dogs mat garden sat chase run quick slow fast big large small tiny good fine great bad
bee bees honey hive flower flowers nectar pollen queen worker colony wax
volcano volcanoes lava magma eruption crater ash earthquake fault plate rock
coffee bean beans roast brew espresso cup grinder water hot cold taste bitter
bread flour yeast dough oven bake crust starter sourdough wheat
what how why does do make makes made produce produces when where which who
""".split()))


def build_tiny_bert(folder, kind: str, seed: int = 0, words=None, hidden: int = 32,
                    layers: int = 2):
    """Save a tiny random BERT of ``kind`` 'bi' or 'cross' to ``folder``: word-level vocabulary
    (the special tokens plus ``words``, default :data:`WORDS` and punctuation), ``hidden`` units,
    ``layers`` layers."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = WORDS + list(".,?!'-") if words is None else list(words)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(path), do_lower_case=True, model_max_length=64)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden,
                     max_position_embeddings=64, num_labels=1)
    torch.manual_seed(seed)
    model = BertModel(cfg) if kind == "bi" else BertForSequenceClassification(cfg)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def lexical_setup(name: str, docs, queries: dict, weights: dict):
    """``(collection, victim, run)``: a small in-memory collection of ``docs`` (docnos d00, d01,
    ...) and ``queries`` (qid -> text), the exact term-weight ranker with ``weights`` as victim,
    and its ranking of every document for every query (1-based ranks)."""
    from rankers import TermWeightRanker
    from ranklab.collections import Collection

    frame = pd.DataFrame({"docno": [f"d{i:02d}" for i in range(len(docs))], "text": list(docs)})
    qframe = pd.DataFrame({"qid": list(queries), "query": list(queries.values())})
    col = Collection(name, frame, qframe, pd.DataFrame(columns=["qid", "docno", "label"]))
    victim = TermWeightRanker(weights, query_weight=1.0)
    run = pd.concat([victim.rank(q, frame["text"].tolist(), frame["docno"].tolist(), qid=qid)
                     .assign(query=q) for qid, q in queries.items()], ignore_index=True)
    return col, victim, run


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(present: bool, reason: str):
    """``skipif(not present)`` on a developer's machine; in CI (``CI=true``), where .ci/setup.sh
    installs every extra and resource, a missing one is a failure, not a skip."""
    if not present and IN_CI:
        return pytest.mark.usefixtures("_fail_in_ci")
    return pytest.mark.skipif(not present, reason=reason)


@pytest.fixture
def _fail_in_ci(request):
    pytest.fail(f"{request.node.name}: a resource this test needs is missing in CI "
                "(.ci/setup.sh installs it)")


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine thread spin-waits
    make them 10-20x slower: one thread for the module that asks for it
    (``pytestmark = pytest.mark.usefixtures("single_thread")``), restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def execute_notebook(path, workdir):
    """Run a notebook top to bottom in ``workdir`` with ``RANKLAB_NOTEBOOK_SMOKE=1`` (small
    parameters) and the Agg backend; returns the executed notebook, asserting no cell errored."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ["RANKLAB_NOTEBOOK_SMOKE"] = "1"
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    return nb


@pytest.fixture(scope="session")
def tiny_bi_path(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bi"), "bi")


@pytest.fixture(scope="session")
def tiny_cross_path(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-cross"), "cross")


@pytest.fixture(scope="session")
def tiny_cross(tiny_cross_path):
    from rankers import load_ranker

    return load_ranker(f"cross-encoder:{tiny_cross_path}", batch_size=4)


@pytest.fixture(scope="session")
def tiny_bi(tiny_bi_path):
    from rankers import load_ranker

    return load_ranker(f"bi-encoder:{tiny_bi_path}", batch_size=4)


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2, loaded once per session (slow tier)."""
    from rankers import load_ranker

    return load_ranker("minilm")


@pytest.fixture(scope="session")
def demo():
    from ranklab.collections import load_collection

    return load_collection("demo")


def synthetic_frames():
    docs = pd.DataFrame({"docno": ["d1", "d2", "d3", "d4", "d5", "d6"], "text": [
        "bees make honey from nectar in the hive",
        "the queen bee and worker bees of a colony",
        "a volcano erupts lava and ash from its crater",
        "an earthquake happens at a fault between plates",
        "roast coffee beans and brew espresso with hot water",
        "sourdough bread needs a starter, flour and a hot oven",
    ]})
    queries = pd.DataFrame({"qid": ["q1", "q2", "q3"], "query": [
        "how do bees make honey", "what makes a volcano erupt", "how to brew coffee"]})
    qrels = pd.DataFrame({"qid": ["q1", "q1", "q2", "q2", "q3", "q3"],
                          "docno": ["d1", "d2", "d3", "d4", "d5", "d6"],
                          "label": [2, 1, 2, 0, 2, 0]})
    return docs, queries, qrels


@pytest.fixture
def synthetic(tmp_path):
    """A tiny BEIR folder written to disk (loaded through the real loader)."""
    import json

    docs, queries, qrels = synthetic_frames()
    (tmp_path / "qrels").mkdir()
    with open(tmp_path / "corpus.jsonl", "w") as f:
        for r in docs.itertuples():
            f.write(json.dumps({"_id": r.docno, "title": "", "text": r.text}) + "\n")
    with open(tmp_path / "queries.jsonl", "w") as f:
        for r in queries.itertuples():
            f.write(json.dumps({"_id": r.qid, "text": r.query}) + "\n")
    qrels.rename(columns={"qid": "query-id", "docno": "corpus-id", "label": "score"}).to_csv(
        tmp_path / "qrels" / "test.tsv", sep="\t", index=False)
    return tmp_path
