"""Fitting the agent's conversation into the model's context: what is dropped, in which order, when it does not fit.

Before each model call the prompt (the system prompt and the conversation) plus the reply's token limit
must fit the model's context. When they do not, `fit_context` drops, oldest first, until they do:
1. the contents of tool results, each replaced by DROPPED so that a call and its result still pair up;
2. whole earlier turns (a user message and the replies after it: the history given to the run, earlier runs).
The current task and the latest step (the model's last call and its result) are never dropped; when even
they do not fit, ContextLengthError says so. Tokens are counted with the model's own `count_tokens`, on the
prompt as it is sent, so what fits is what the model accepts.

Does not: summarise what it drops, drop the current run's calls (the step schema keeps them short), or
change the conversation it is given (the agent keeps it whole; only the prompt is trimmed).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate

from core.errors import ContextLengthError

DROPPED = "[result dropped to fit the context]"


def fit_context(messages: list[dict], count_prompt: Callable[[list[dict]], int], count_text: Callable[[str], int],
                limit: int) -> tuple[list[dict], dict | None]:
    """(the messages to send, what was dropped or None) so that count_prompt(messages) <= limit.

    `messages`: the conversation, its last "user" message the current task. `count_prompt`: the tokens of
    the whole prompt built from a conversation; `count_text`: of one text, to guess how much each drop
    saves (each guess is checked with count_prompt). What was dropped: {"results": tool results emptied,
    "messages": earlier messages removed, "tokens": prompt tokens saved}.
    Raises ContextLengthError when the task and the latest step alone exceed `limit`.
    """
    total = count_prompt(messages)
    if total <= limit:
        return messages, None
    results, turns = _droppable(messages)
    emptied = _apply(messages, results, [])
    savings = [count_text(messages[i]["content"]) - count_text(DROPPED) for i in results]
    savings += [sum(count_text(message["content"]) for message in emptied[start:stop]) for start, stop in turns]
    saved = list(accumulate(savings, initial=0))
    drops = next((n for n, tokens in enumerate(saved) if total - tokens <= limit), len(savings))  # checked below
    while True:
        trimmed = _apply(messages, results[:drops], turns[:max(0, drops - len(results))])
        tokens = count_prompt(trimmed)
        if tokens <= limit:
            return trimmed, {"results": min(drops, len(results)), "messages": len(messages) - len(trimmed),
                             "tokens": total - tokens}
        if drops == len(savings):
            raise ContextLengthError(f"the prompt has {tokens} tokens with every earlier turn and tool result "
                                     "dropped (what is left: the system prompt, the task and the latest step), "
                                     f"over the limit of {limit}")
        drops += 1


def _droppable(messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """The tool results that may be emptied and the earlier turns (start, stop) that may go, each oldest first."""
    task = max(i for i, message in enumerate(messages) if message["role"] == "user")
    calls = [i for i, message in enumerate(messages) if i > task and message["role"] == "assistant"]
    latest = calls[-1] if calls else len(messages)  # the latest step: this call and its result
    results = [i for i, message in enumerate(messages[:latest])
               if message["role"] == "tool" and len(message["content"]) > len(DROPPED)]
    starts = [i for i in range(task) if i == 0 or messages[i]["role"] == "user"]
    return results, list(zip(starts, [*starts[1:], task], strict=False))  # each turn ends where the next starts


def _apply(messages: list[dict], results: list[int], turns: list[tuple[int, int]]) -> list[dict]:
    emptied = set(results)
    removed = {i for start, stop in turns for i in range(start, stop)}
    return [{**message, "content": DROPPED} if i in emptied else message
            for i, message in enumerate(messages) if i not in removed]
