"""One BOS at the start of every rollout prompt, tokenized as the model was trained (issue 13).

A Llama-style model directory built here, offline: a tokenizer whose post-processor adds BOS
itself (add_bos_token) and whose chat template also writes `{{ bos_token }}`, and a tiny random
Llama. Chat-templated text is tokenized without the tokenizer's special tokens, as TRL and vLLM
tokenize it (`apply_chat_template(tokenize=True)`, the reference here); raw text keeps the
tokenizer's default (one BOS added).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr.data import DataConfig, load_problems
from rlvr.errors import ConfigError
from rlvr.responses import check_prompt_lengths
from rlvr.rollout import HFEngine, Sampling
from rlvr.templates import chat_messages
from test_eval_server import fake_server  # noqa: F401  (a stand-in completions server, a fixture)

CHAT = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHARS = list("0123456789+-=*/ ?:.,()abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n'")
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]


def make_llama(out: Path, hidden: int = 32) -> Path:
    """A character-level tokenizer that adds BOS itself (TemplateProcessing `<s> $A`), with a chat
    template that writes `{{ bos_token }}`, and a 1-layer random Llama, saved at `out`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
    )
    tok.chat_template = CHAT
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_llama(tmp_path_factory.mktemp("llama"))
    tok = AutoTokenizer.from_pretrained(path)
    # the fixture is what the test needs: the tokenizer adds BOS, and so does its chat template
    assert tok("ab")["input_ids"][0] == tok.bos_token_id
    assert tok.apply_chat_template(chat_messages("ab"), tokenize=False, add_generation_prompt=True).startswith("<s>")
    return AutoModelForCausalLM.from_pretrained(path), tok


def prompt_rows(model, tok, template: str):
    """The rollout's prompt token ids (left padding removed) of three chain_sum problems, with their problems."""
    train, _ = load_problems(DataConfig(task="chain_sum", train_size=3, eval_size=1, template=template), tok)
    torch.manual_seed(0)
    batch = HFEngine(model, tok).generate(train, 2, Sampling(max_new_tokens=2))
    P = batch.prompt_len
    rows = [ids[:P][mask[:P].bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True)]
    return rows, batch.problems


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_rollout_prompts_start_with_exactly_one_bos(llama, template):
    model, tok = llama
    rows, problems = prompt_rows(model, tok, template)
    bos = tok.bos_token_id
    for row in rows:
        assert row[0] == bos and row[1] != bos, tok.convert_ids_to_tokens(row[:4])
        assert row.count(bos) == 1
    # the reference: how TRL and vLLM tokenize a chat prompt, and the tokenizer's default for raw text
    for row, p in zip(rows, problems, strict=True):
        q = p.metadata["question"]
        if template == "chat":
            want = tok.apply_chat_template(chat_messages(q), tokenize=True, add_generation_prompt=True)["input_ids"]
        else:
            want = tok(q)["input_ids"]
        assert row == list(want)


def test_prompt_length_check_counts_one_bos(llama):
    """check_prompt_lengths counts the tokens TRL and vLLM would feed (one BOS): a prompt that fits
    exactly is accepted, one position fewer is refused."""
    model, tok = llama
    train, _ = load_problems(DataConfig(task="chain_sum", train_size=3, eval_size=1, template="chat"), tok)
    p = train[0]
    n = len(
        tok.apply_chat_template(chat_messages(p.metadata["question"]), tokenize=True, add_generation_prompt=True)[
            "input_ids"
        ]
    )
    check_prompt_lengths([p], tok, 4, n + 4)
    with pytest.raises(ConfigError, match=f"the prompt is {n} tokens"):
        check_prompt_lengths([p], tok, 4, n + 3)


@pytest.mark.vllm
def test_the_vllm_engine_feeds_the_same_one_bos_prompt(tmp_path):
    """The vllm engine gets its prompt token ids from the same call: one BOS, and greedy responses
    equal the hf engine's on the chat-templated prompts (vLLM is given ids, so it adds nothing)."""
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.vllm_engine import VLLMEngine

    path = make_llama(tmp_path / "m", hidden=64)  # vLLM's CPU attention needs head_dim >= 32
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    train, _ = load_problems(DataConfig(task="chain_sum", train_size=4, eval_size=1, template="chat"), tok)
    greedy = Sampling(temperature=0.0, max_new_tokens=6)
    hf = HFEngine(model, tok).generate(train, 1, greedy)
    engine = VLLMEngine(model, tok)
    try:
        vl = engine.generate(train, 1, greedy)
    finally:
        engine.close()
    assert torch.equal(vl.input_ids[:, : vl.prompt_len], hf.input_ids[:, : hf.prompt_len])
    for ids, mask in zip(vl.input_ids, vl.attention_mask, strict=True):
        row = ids[: vl.prompt_len][mask[: vl.prompt_len].bool()].tolist()
        assert row[0] == tok.bos_token_id and row.count(tok.bos_token_id) == 1
    assert vl.completions == hf.completions


def test_a_server_is_asked_not_to_add_special_tokens_to_chat_templated_text(fake_server):  # noqa: F811
    """`rlvr eval --server`: the server tokenizes the text; for a chat-templated prompt it is told
    not to add BOS (vLLM's `add_special_tokens`), for raw text nothing changes."""
    from rlvr.eval.server import ServerEngine
    from rlvr.tasks import Problem

    url, seen = fake_server
    chat = Problem("<s><|user|>1+1<|end|><|assistant|>", "2", metadata={"template": "chat"})
    raw = Problem("1+1=", "2", metadata={"template": "plain"})
    ServerEngine(url).generate([chat, raw], 1, Sampling(max_new_tokens=2))
    sent = {s["prompt"]: s for s in seen}
    assert sent[chat.prompt]["add_special_tokens"] is False
    assert "add_special_tokens" not in sent[raw.prompt]
