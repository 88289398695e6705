"""Prompt templates: how a problem's question becomes the text the model sees.

The same template must serve the base model and the trained one in eval (Yue et
al. compare both zero-shot on one prompt), so the template is part of the data
config, not of the model.

* `plain`: the question as is. The embedded tiny model is trained on bare
  prompts, so this is the default.
* `qwen-boxed`: the prompt of Yue et al. 2025 and SimpleRL-Zoo for Qwen2.5 base
  models (Qwen2.5-Math's evaluation template of that name): Qwen's chat format,
  asking for step-by-step reasoning and the final answer in \\boxed{}.
* `r1`: DeepSeek-R1-Zero's template (Guo et al. 2025, Table 1): reasoning in
  <think> </think>, the answer in <answer> </answer>.
* `chat`: the tokenizer's own chat template, with the question as the user turn.

Tokenizing a prompt (`encode_prompts`, the one call every engine and the length check use)
follows how the model was trained: text the chat template wrote is tokenized without the
tokenizer's special tokens (the template writes its own, `{{ bos_token }}`: a Llama-style
tokenizer that adds BOS as well would start the prompt with two), as TRL and vLLM tokenize
templated text (`apply_chat_template(tokenize=True)`); any other template's text is raw text,
tokenized with the tokenizer's default (BOS added where the tokenizer adds one).
"""

from __future__ import annotations

from typing import Any

QWEN_BOXED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)

R1 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {question}. Assistant:"
)

TEMPLATES: dict[str, str | None] = {"plain": "{question}", "qwen-boxed": QWEN_BOXED, "r1": R1, "chat": None}

# what a template asks the model to write its final answer in (read by the format and answer rewards)
ANSWER_STYLE = {"plain": "boxed", "qwen-boxed": "boxed", "chat": "boxed", "r1": "r1"}


def check_template(name: str, key: str = "data.template") -> None:
    if name not in TEMPLATES:
        import difflib

        from rlvr.errors import ConfigError

        close = difflib.get_close_matches(name, TEMPLATES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}: unknown template {name!r}{hint} (known: {', '.join(TEMPLATES)})")


def apply_template(name: str, question: str, tokenizer: Any = None) -> str:
    """The prompt text for `question` under template `name`.

    `chat` needs the tokenizer of the model (its `apply_chat_template`);
    the others are fixed strings.
    """
    check_template(name)
    if name == "chat":
        from rlvr.errors import ConfigError

        if tokenizer is None:
            raise ConfigError("data.template: 'chat' uses the model's chat template; load_problems needs the tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "data.template: 'chat' but the model's tokenizer has no chat template; "
                f"use one of: {', '.join(t for t in TEMPLATES if t != 'chat')}"
            )
        return tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)
    return TEMPLATES[name].format(question=question)


def chat_messages(question: str) -> list[dict[str, str]]:
    """The conversation `chat` renders: the question as the one user turn (also what a TRL reward
    function receives as a conversational prompt)."""
    return [{"role": "user", "content": question}]


def adds_special_tokens(problem: Any) -> bool:
    """Whether `problem`'s prompt text is tokenized with the tokenizer's special tokens: not when the
    chat template wrote it (it holds its own BOS), else the tokenizer's default (True)."""
    return problem.metadata.get("template") != "chat"


def encode_prompts(tokenizer: Any, problems: list[Any], **kwargs: Any) -> Any:
    """`tokenizer(prompts, **kwargs)` for the problems' prompt texts, special tokens added or not as
    `adds_special_tokens` says. One batch has one template; a mix is refused (ValueError)."""
    flags = {adds_special_tokens(p) for p in problems}
    if len(flags) > 1:
        raise ValueError("encode_prompts: one batch mixes chat-templated and raw prompts")
    add = flags.pop() if flags else True
    return tokenizer([p.prompt for p in problems], add_special_tokens=add, **kwargs)
