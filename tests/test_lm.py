"""Fluency models: the interpolated Kneser-Ney n-gram model and the causal-LM adapter (a tiny
GPT-2 built from a config; nothing is downloaded)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.lm import CausalLM, LMError, NGramLM, load_lm

pytestmark = pytest.mark.usefixtures("single_thread")

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog ran",
         "the cat ran to the dog"]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_is_a_distribution(order):
    lm = NGramLM(TEXTS, order=order)
    for ctx in ([], ["the"], ["sat", "on"], ["the", "cat"], ["never", "seen"], ["on", "the"]):
        total = sum(math.exp(lm.logprob(ctx, w)) for w in lm.vocab)
        assert total == pytest.approx(1.0, abs=1e-9), (order, ctx)
        vec = lm.logprobs(ctx, lm.vocab)
        assert np.allclose(vec, [lm.logprob(ctx, w) for w in lm.vocab])


def test_ngram_kneser_ney_hand_values():
    # bigram model on one text "a b": top counts c(<s> a) = c(a b) = c(b </s>) = 1
    lm = NGramLM(["a b"], order=2, discount=0.5)
    # unigram continuation counts: a:1 (<s>), b:1 (a), </s>:1 (b); V = {</s>, a, b, <unk>}
    p_uni = {w: max(c - 0.5, 0) / 3 + 0.5 * 3 / 3 / 4 for w, c in
             {"a": 1, "b": 1, "</s>": 1, "<unk>": 0}.items()}
    # P(unknown | <s>) = max(0 - 0.5, 0) / 1 + 0.5 * 1 / 1 * P_uni(<unk>)
    assert math.exp(lm.logprob([], "zzz")) == pytest.approx(0.5 * p_uni["<unk>"])
    assert math.exp(lm.logprob([], "a")) == pytest.approx(0.5 + 0.5 * p_uni["a"])
    # P(b | a) = (1 - 0.5) / 1 + 0.5 * 1 / 1 * P_uni(b)
    assert math.exp(lm.logprob(["a"], "b")) == pytest.approx(0.5 + 0.5 * p_uni["b"])
    # unseen context: back off fully
    assert math.exp(lm.logprob(["q"], "b")) == pytest.approx(p_uni["b"])


def test_ngram_perplexity_prefers_corpus_order():
    lm = NGramLM(TEXTS)
    assert lm.perplexity("the cat sat on the mat") < lm.perplexity("mat the on sat cat the")
    assert lm.perplexity("the cat sat") >= 1.0
    assert lm.ratio("the cat sat", "the cat sat") == 1.0
    assert lm.ratio("the cat sat on the mat", "mat the on sat cat the") > 1.0
    # case-insensitive, punctuation ignored
    assert lm.perplexity("The CAT, sat!") == pytest.approx(lm.perplexity("the cat sat"))


def test_ngram_errors():
    with pytest.raises(LMError, match="at least one training text"):
        NGramLM([])
    with pytest.raises(LMError, match="order"):
        NGramLM(TEXTS, order=0)
    with pytest.raises(LMError, match="discount"):
        NGramLM(TEXTS, discount=1.5)


def test_load_lm_specs():
    assert load_lm(None) is None and load_lm("none") is None
    lm = load_lm("ngram2", texts=TEXTS)
    assert isinstance(lm, NGramLM) and lm.order == 2
    assert load_lm(lm) is lm
    with pytest.raises(LMError, match="col= or texts="):
        load_lm("ngram")
    with pytest.raises(LMError, match="unknown language model"):
        load_lm("no-such-model-folder")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A tiny random GPT-2 with a word-level WordPiece tokenizer, saved to a folder."""
    import torch
    from transformers import BertTokenizerFast, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for t in TEXTS for w in t.split()}) + ["##s"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


def test_causal_lm_adapter(tiny_gpt2):
    import torch

    lm = load_lm(f"causal:{tiny_gpt2}")
    assert isinstance(lm, CausalLM)
    tok, model = lm.tokenizer, lm.model
    ids = [tok.cls_token_id] + tok("the cat", add_special_tokens=False)["input_ids"]
    nxt = tok("sat", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], -1)[nxt]
    assert lm.logprob(["the", "cat"], "sat") == pytest.approx(float(lp), abs=1e-5)
    # single-token words: the vectorized first-token scores equal logprob
    assert np.allclose(lm.logprobs(["the"], ["cat", "dog"]),
                       [lm.logprob(["the"], "cat"), lm.logprob(["the"], "dog")], atol=1e-5)
    # a two-piece word sums its pieces
    two = lm.logprob(["the"], "cats")
    assert two < lm.logprobs(["the"], ["cats"])[0] + 1e-9
    p = lm.perplexity("the cat sat on the mat")
    assert 1.0 <= p < 1e6 and lm.ratio("the cat", "the cat") == 1.0
    # the same interface as the n-gram model: usable by the metrics
    from attacks.metrics import perplexity_ratio

    assert perplexity_ratio(lm, "the cat sat", "sat cat the") > 0
