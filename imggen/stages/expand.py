"""Stage 1, expand: decide the prompt the diffusion model is given.

- ``expand`` lets a causal language model extend the user's prompt (Fooocus-style), seeded so
  the same prompt, seed and model always give the same expansion, optionally held to a list of
  allowed words so it adds style words and nothing else.
- ``caption`` describes an input image, for image-to-image jobs that come without a prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from imggen.aux_models import Captioner, LanguageModel
from imggen.errors import InvalidInput


@dataclass(frozen=True)
class Expansion:
    original: str
    prompt: str
    expanded: bool


def clean(text: str) -> str:
    """Printable characters only, whitespace collapsed (models can emit control bytes)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


@torch.inference_mode()
def expand(
    prompt: str,
    expander: LanguageModel | None = None,
    *,
    seed: int = 0,
    max_new_tokens: int = 24,
    allowed_words: Sequence[str] | None = None,
) -> Expansion:
    """Return the prompt to encode: ``prompt`` itself, or extended by ``expander``.

    Raises InvalidInput for an empty prompt or a bad token bound.
    """
    # 1. Check inputs.
    original = clean(prompt)
    if not original:
        raise InvalidInput("prompt: must not be empty")
    if expander is None:
        return Expansion(original=original, prompt=original, expanded=False)
    if max_new_tokens < 1:
        raise InvalidInput(f"max_new_tokens: must be at least 1 (got {max_new_tokens})")

    # 2. Generate a continuation, seeded without disturbing anyone else's random state.
    tokenizer = expander.tokenizer
    inputs = tokenizer(original, return_tensors="pt").to(expander.device)
    prompt_length = inputs.input_ids.shape[1]
    allowed = _WordConstraint(tokenizer, allowed_words, prompt_length) if allowed_words else None
    devices = [expander.device] if expander.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        output = expander.model.generate(  # type: ignore[operator]
            **inputs,
            do_sample=True,
            top_p=0.9,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
            prefix_allowed_tokens_fn=allowed,
        )

    # 3. Keep the continuation only: the user's words always lead the prompt.
    continuation = clean(tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True))
    if allowed_words:
        # The token bound can cut the last word short: keep whole allowed words only.
        allowed_set = {clean(word) for word in allowed_words}
        kept = [piece.strip() for piece in continuation.split(",") if piece.strip() in allowed_set]
        continuation = ", ".join(kept)
    if not continuation:
        return Expansion(original=original, prompt=original, expanded=False)
    joined = (
        f"{original}{continuation}"
        if continuation.startswith(",")
        else f"{original}, {continuation}"
    )
    return Expansion(original=original, prompt=clean(joined), expanded=True)


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    terminal: bool = False


class _WordConstraint:
    """``prefix_allowed_tokens_fn`` that lets generation spell only ``", word"`` pieces.

    The allowed pieces form a token trie; since one word may be a prefix of another, the
    position in the trie is tracked as a set of nodes. After a whole word, a new one or the end
    of the text may follow.
    """

    def __init__(self, tokenizer: object, words: Sequence[str], prompt_length: int) -> None:
        self.root = _Node()
        self.eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
        self.prompt_length = prompt_length
        for word in words:
            if not word.strip():
                continue
            node = self.root
            for token in tokenizer(f", {word.strip()}").input_ids:  # type: ignore[operator]
                node = node.children.setdefault(int(token), _Node())
            node.terminal = True

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        states = [self.root]
        for token in input_ids[self.prompt_length :].tolist():
            following = []
            for node in states:
                if token in node.children:
                    following.append(node.children[token])
                if node.terminal and token in self.root.children:
                    following.append(self.root.children[token])
            states = following or [self.root]
        allowed: set[int] = set()
        for node in states:
            allowed.update(node.children)
            if node.terminal or node is self.root:
                allowed.update(self.root.children)
                allowed.add(self.eos)
        return sorted(allowed)


@torch.inference_mode()
def caption(captioner: Captioner, image: Image.Image, max_new_tokens: int = 24) -> str:
    """Describe ``image`` in words (greedy decoding: the same image always gets the same caption).

    Raises InvalidInput if the model produces no words.
    """
    pixels = captioner.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
    output = captioner.model.generate(
        pixel_values=pixels.to(captioner.device, captioner.model.dtype),
        max_new_tokens=max_new_tokens,
        min_new_tokens=1,
        do_sample=False,
    )
    text = clean(captioner.tokenizer.decode(output[0], skip_special_tokens=True))
    if not text:
        raise InvalidInput("image: the caption model described the image with no words")
    return text
