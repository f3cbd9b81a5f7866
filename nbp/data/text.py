"""Text conditions: a built-in byte-level tokenizer (works offline) or any local Hugging Face tokenizer."""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch

from nbp.extras import require


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; 256 pads. The default for text-conditional models trained with nbp."""

    vocab_size = 257
    pad_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class HFTokenizer:
    """A Hugging Face tokenizer from a local folder (e.g. the Llama-2 tokenizer of the official UCF models)."""

    def __init__(self, path: str):
        transformers = require("transformers", "text", "a text-conditional model's tokenizer")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.vocab_size = len(self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


@lru_cache(maxsize=4)
def load_text_tokenizer(spec: str):
    """"byte" for the built-in tokenizer, else a local Hugging Face tokenizer folder; loaded once per process."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)


def encode_texts(tokenizer, texts: list[str], length: int) -> torch.Tensor:
    """(B, length) ids: truncated with a warning when longer, padded with the tokenizer's pad id."""
    rows = []
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) > length:
            warnings.warn(f"text {text!r} has {len(ids)} tokens; the model reads {length}: truncated", stacklevel=2)
        ids = ids[:length]
        rows.append(ids + [tokenizer.pad_id] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


def text_ids_for(model_config, text: str | list[str]) -> torch.Tensor:
    """Raw text-tokenizer ids (B, P) of prompts for a text-conditional model (its `text_tokenizer`, `cond_len`)."""
    texts = [text] if isinstance(text, str) else list(text)
    return encode_texts(load_text_tokenizer(model_config.text_tokenizer), texts, model_config.cond_len)
