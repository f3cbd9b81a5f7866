"""Generating video codes with a next-block-prediction transformer, as small functions (gpt-fast's shape):
`prefill` runs the prompt into a KV cache, `decode_step` feeds the codes of one step, `sample_step` turns the
last logits into codes, and `generate` loops over the layout's step widths, the same loop for every layout.

Guidance (`nbp.generation.guidance`) runs each row twice, conditional then unconditional, and combines their logits.
"""
from __future__ import annotations

import torch

from nbp.data.text import text_ids_for
from nbp.generation.decoding import resolve_decoding
from nbp.generation.guidance import double_rows, guidance_scale, guide_rows, is_guided
from nbp.generation.sampling import sample_logits
from nbp.generation.tokens_static import StaticDecoder
from nbp.models.transformer import KVCache, Transformer


def prefill(model: Transformer, prompt: torch.Tensor, cache: KVCache, drop: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, S, V) of the last S prompt positions, the prompt (B, n) written into the empty cache."""
    mask = model.layout.mask(prompt.shape[1], prompt.device)
    return model(prompt, mask=mask, drop_condition=drop, cache=cache, last=model.config.block)


def decode_step(model: Transformer, ids: torch.Tensor, cache: KVCache, drop: torch.Tensor | None) -> torch.Tensor:
    """Logits (B, S, V) of the last S positions after feeding ids (B, n) after the cached ones."""
    return model(ids, drop_condition=drop, cache=cache, last=model.config.block)


def sample_step(model: Transformer, logits: torch.Tensor, scale: float | torch.Tensor | None,
                generator: torch.Generator | None, **sampling) -> torch.Tensor:
    """Codes in model ids (B, width) from the logits (rows, width, V) of one step; with a guidance `scale`, the
    rows are the batch conditional, then unconditional."""
    cfg = model.config
    if scale is not None:
        logits = guide_rows(logits, scale)
    if not cfg.sample_full_vocab:
        logits = logits[..., cfg.video_offset:]
    ids = sample_logits(logits, generator=generator, **sampling)
    return ids if cfg.sample_full_vocab else ids + cfg.video_offset


class DynamicDecoder:
    """The growing `KVCache` (`prefill`, `decode_step`), sampling after each forward; the CPU's path (its keys'
    layout suits CPU matmuls). `nbp.generation.tokens_static.StaticDecoder` has the same interface, for GPUs."""

    def __init__(self, model: Transformer, rows: int, capacity: int, sample):
        weight = model.tok_emb.weight
        self.model, self.sample, self.drop = model, sample, None
        self.cache = KVCache(model.config, rows, capacity, weight.device, weight.dtype)

    def prefill(self, prompt: torch.Tensor, drop: torch.Tensor | None, width: int) -> torch.Tensor:
        self.drop = drop
        return self.sample(prefill(self.model, prompt, self.cache, drop)[:, -width:])

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.sample(decode_step(self.model, ids, self.cache, self.drop)[:, -ids.shape[1]:])


def make_decoder(model: Transformer, rows: int, capacity: int, sample, decoding: str, generator):
    """The decoder of a `decoding` mode (`nbp.generation.decoding`): the growing cache, or the static one."""
    decoding = resolve_decoding(decoding, model.tok_emb.weight.device)
    if decoding == "dynamic":
        return DynamicDecoder(model, rows, capacity, sample)
    generators = [] if generator is None else list(generator) if isinstance(generator, (list, tuple)) else [generator]
    return StaticDecoder(model, rows, capacity, sample, decoding, generators=generators)


@torch.no_grad()
def generate(model: Transformer, num_tokens: int, *, batch_size: int | None = None, text_ids=None, text=None,
             class_ids=None, context=None, greedy: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, cfg_scale: float | None = None, cfg_schedule: str = "constant",
             generator: torch.Generator | None = None, decoding: str = "auto") -> torch.Tensor:
    """`num_tokens` video codes (B, num_tokens) in [0, video_vocab), one block per step (the first row token by
    token for hybrid models), after the optional `context` codes (B, n); `decoding` as in `make_decoder`."""
    layout = model.layout
    if text is not None:
        text_ids = text_ids_for(model.config, text)
    batch = next(len(x) for x in (context, class_ids, text_ids, [None] * (batch_size or 1)) if x is not None)
    context = model.check_codes(torch.zeros(batch, 0) if context is None else context, "context")
    layout.check_generation(context.shape[1], num_tokens)
    cond = model.condition_ids(text_ids, class_ids)
    doubled = is_guided(cfg_scale, cond is not None)
    drop = torch.arange(2 * batch, device=context.device) >= batch if doubled else None
    scale = torch.ones((), device=context.device)  # a tensor, so that a captured step reads it at each replay
    sampling = dict(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        return sample_step(model, logits, scale if doubled else None, generator, **sampling)

    prompt = double_rows(layout.sequence(context, cond), doubled)
    widths = layout.step_widths(context.shape[1], num_tokens)
    decoder = make_decoder(model, len(prompt), prompt.shape[1] + num_tokens + layout.block, sample, decoding,
                           generator)
    done, out = context.shape[1], []
    for step, width in enumerate(widths):
        if doubled:
            scale.fill_(guidance_scale(cfg_scale, step, len(widths), cfg_schedule))
        ids = (decoder.prefill(prompt, drop, width) if step == 0 else
               decoder.step(double_rows(layout.step_inputs(out[-1], done), doubled)))
        out.append(ids)
        done += width
    codes = torch.cat(out, dim=1)[:, :num_tokens] - model.config.video_offset
    return codes.clamp(0, model.config.video_vocab - 1)
