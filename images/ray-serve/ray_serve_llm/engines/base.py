"""The one interface every engine implements, and what passes through it.

The server renders the conversation with `Engine.render` *before* it answers (so a
template error or an over-long prompt is still a 400, even for a stream), then iterates
`Engine.generate`, which yields text pieces as the engine produces them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    # 0 means greedy decoding.
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Prompt:
    """A rendered conversation: the token ids the model reads (BOS included, once)."""

    token_ids: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Chunk:
    """A piece of generated text. The last chunk of a generation carries `finish_reason`;
    `completion_tokens` counts the tokens generated so far."""

    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0


class ChatTemplateError(ValueError):
    """The model's chat template refused the conversation (e.g. roles that do not
    alternate): the client's mistake, answered with a 400."""


class Engine(ABC):
    """Generates text for rendered prompts. `render` uses the model's own tokenizer and chat
    template (never a hand-built `[INST]` string), so every engine formats prompts alike."""

    name: str = "engine"
    # The longest sequence the model itself can take, when the engine knows it (the server
    # then never lets prompt + completion exceed it, whatever max_model_len says).
    max_context: int | None = None

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        # The most characters one token stands for: the longest vocabulary entry, special
        # tokens included (a byte-level vocabulary writes one character per byte, so it
        # overstates, never understates). A text of N characters is at least N / this many
        # tokens (for a tokenizer whose normalizer deletes no characters, as Mistral's and
        # Llama's), which the server checks before tokenizing it.
        self.max_chars_per_token = max(len(piece) for piece in tokenizer.get_vocab())

    def render(self, messages: Sequence[Mapping[str, str]]) -> Prompt:
        """Applies the tokenizer's chat template and tokenizes in one step: the template
        writes BOS itself, and re-tokenizing its text would add a second one."""
        from jinja2.exceptions import TemplateError

        try:
            encoded = self.tokenizer.apply_chat_template(
                [dict(message) for message in messages],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )
        except TemplateError as error:
            raise ChatTemplateError(str(error)) from None
        return Prompt(token_ids=tuple(int(token) for token in encoded["input_ids"]))

    @abstractmethod
    def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        """Yields the completion as it is generated; non-empty text pieces, and a last
        chunk (possibly with empty text) that carries `finish_reason`. Closing the iterator
        early (a client that went away) stops the generation."""

    async def check_health(self) -> None:  # noqa: B027 - a no-op default: engines override it when they can fail
        """Raises if the engine can no longer serve. Must be cheap: it runs every few
        seconds from the Serve controller."""

    def shutdown(self) -> None:  # noqa: B027 - a no-op default: engines override it when they hold a device
        """Frees the accelerator (called when Serve stops the replica)."""
