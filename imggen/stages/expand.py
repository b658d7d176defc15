"""Stage 1, expand: decide the prompt the diffusion model is given.

- ``expand`` lets a causal language model extend the user's prompt, seeded so the same prompt,
  seed and model always give the same expansion. An instruct model (one with a chat template,
  SmolLM2) is asked for visual details to add; a plain one continues the prompt (Fooocus-style),
  optionally held to a list of allowed words so it adds style words and nothing else. Either
  way the user's words lead, and the result is held to the diffusion model's token budget.
- ``caption`` describes an input image, for image-to-image jobs that come without a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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


def canonical_text(prompt: str) -> str:
    """A prompt's canonical form for a model of any world: what CLIP's tokenizer would not
    tell apart (case, spacing, a closing full stop) folded away."""
    return clean(prompt).lower().rstrip(" .")


@torch.inference_mode()
def expand(
    prompt: str,
    expander: LanguageModel | None = None,
    *,
    seed: int = 0,
    max_new_tokens: int = 24,
    allowed_words: Sequence[str] | None = None,
    fits: Callable[[str], bool] | None = None,
) -> Expansion:
    """Return the prompt to encode: ``prompt`` itself, or extended by ``expander``.

    ``fits`` tells whether a prompt is within the diffusion model's token budget; added
    phrases that would overflow it are dropped.

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

    # 2. Generate, seeded without disturbing anyone else's random state.
    tokenizer = expander.tokenizer
    instruct = bool(getattr(tokenizer, "chat_template", None)) and not allowed_words
    if instruct:
        messages = [{"role": "user", "content": _INSTRUCTION.format(prompt=original)}]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(expander.device)
    else:
        inputs = tokenizer(original, return_tensors="pt").to(expander.device)
    prompt_length = inputs["input_ids"].shape[1]
    allowed = _WordConstraint(tokenizer, allowed_words, prompt_length) if allowed_words else None
    devices = [expander.device] if expander.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        output = expander.model.generate(  # type: ignore[operator]
            **inputs,
            do_sample=True,
            top_p=0.9,
            temperature=0.7 if instruct else 1.0,
            # Small instruct models loop without it.
            repetition_penalty=1.3 if instruct else 1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
            prefix_allowed_tokens_fn=allowed,
        )

    # 3. Keep the added phrases only: the user's words always lead the prompt.
    text = clean(tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True))
    pieces = [piece.strip(" \"'") for piece in re.split(r"[,.;]|\.\.\.", text)]
    if allowed_words:
        # The token bound can cut the last word short: keep whole allowed words only.
        allowed_set = {clean(word) for word in allowed_words}
        pieces = [piece for piece in pieces if piece in allowed_set]
    elif instruct:
        # The last phrase may be cut short by the bound; phrases that repeat the prompt add
        # nothing.
        pieces = pieces[:-1] if len(pieces) > 1 else pieces
        pieces = [p for p in pieces if p and p.lower() not in original.lower()]
    prompt = original
    for piece in pieces:
        candidate = f"{prompt}, {piece}" if piece else prompt
        if fits is not None and not fits(candidate):
            break
        prompt = candidate
    if prompt == original:
        return Expansion(original=original, prompt=original, expanded=False)
    return Expansion(original=original, prompt=clean(prompt), expanded=True)


_INSTRUCTION = "Write a detailed image prompt for: {prompt}\nUse short comma-separated phrases."


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
