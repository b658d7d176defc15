"""The parts of the shapes model, untrained: a word-level CLIP tokenizer, text encoder, UNet,
VAE and scheduler shaped like Stable Diffusion's, only small.

The tokenizer knows the world's words whole; any other word falls apart into pieces the model
never saw in training, which is why prompts written in other words need the *expand* stage to
map them first.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from imggen.shapes.world import COLOURS, SHAPES

IMAGE_SIZE = 64
MAX_TOKENS = 16  # "<bos> a red circle on a white background <eos>" is 9
UNKNOWN = "<|unk|>"
SPECIALS = ("<|startoftext|>", "<|endoftext|>", UNKNOWN)
WORDS = ("a", "on", "background", *COLOURS, *SHAPES)


def _bpe_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Byte-pair merges learnt on ``words`` until each is one token, ties broken alphabetically.

    This is BPE training, done here because the tokenizers library's trainer breaks ties
    differently from run to run (and token ids with them). Merges must be learnt, not written
    per word: "r e" made for "red" would split "g r" in "green".
    """
    spelled = [[*word[:-1], word[-1] + "</w>"] for word in words]
    merges: list[tuple[str, str]] = []
    while pairs := Counter(pair for symbols in spelled for pair in pairwise(symbols)):
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for symbols in spelled:
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
                i += 1
    return merges


def word_tokenizer(workdir: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE joins each of the world's words into one token; other words
    fall apart into letters and pieces of the world's words."""
    merges = _bpe_merges(WORDS)
    letters = sorted({c for word in WORDS for c in word} | {word[-1] + "</w>" for word in WORDS})
    vocab = [*SPECIALS, *letters, *(left + right for left, right in merges)]
    (workdir / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (workdir / "merges.txt").write_text("\n".join(lines) + "\n")
    tokenizer = CLIPTokenizer(
        str(workdir / "vocab.json"),
        str(workdir / "merges.txt"),
        unk_token=UNKNOWN,
        model_max_length=MAX_TOKENS,
    )
    for word in WORDS:
        pieces = tokenizer.tokenize(word)
        if pieces != [word + "</w>"]:
            raise AssertionError(f"the word {word!r} does not stay whole: {pieces}")
    return tokenizer


def text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def vae() -> AutoencoderKL:
    # Three levels: 64x64 pixels <-> 16x16x4 latents, so the UNet works on 256 positions.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=2,  # heads, in diffusers' naming
        norm_num_groups=16,
    )


def scheduler() -> DDIMScheduler:
    # Stable Diffusion's noise schedule; v-prediction keeps flat colours right at few steps.
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
