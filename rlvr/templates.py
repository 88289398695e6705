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
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return TEMPLATES[name].format(question=question)
