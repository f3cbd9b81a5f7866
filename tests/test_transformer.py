import json
from argparse import Namespace

import numpy as np
import pytest
import torch

from nbp.checkpoint import CheckpointError, load_model, save_model
from nbp.config import ConfigError, InputError, from_dict, from_preset
from nbp.download import load_transformer
from nbp.generation import generate
from nbp.generation.guidance import guidance_scale, guide
from nbp.generation.sampling import filter_logits, sample
from nbp.models.transformer import KVCache, Transformer, TransformerConfig
from nbp.models.transformer_attention import (
    AttentionMask,
    attend,
    block_causal_mask,
    block_ids,
    decode_attention,
    key_extents,
    nbp_mask,
    with_visible_prefix,
)

from conftest import det_state_dict, golden_dir

S = 16
CLASSES = dict(condition="class", num_classes=4, cond_len=1)  # the task of the tiny test models


def official_checkpoint(path, spec, seed, **args):
    state = {"transformer." + k: v for k, v in det_state_dict(spec, seed).items()}
    state["first_stage_model.encoder.weight"] = torch.zeros(1)  # the frozen tokenizer: ignored
    ctx = dict(spec)["pos_emb"][1]
    hp = Namespace(vocab_size=64000, block_size=ctx, n_layer=2, n_head=4, n_embd=64, semi_ar=True,
                   token_number_per_step=16, **args)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1234, "hyper_parameters": {"args": hp}}, path)
    return path


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    spec = json.loads((golden_dir() / "nbp_gpt_small_spec.json").read_text())
    folder = tmp_path_factory.mktemp("lm")
    hybrid = official_checkpoint(folder / "ucf_hybrid.ckpt", spec["hybrid_spec"], 11, cond_token_num=8, hybrid=True,
                                 starts_with_bov=True, cond_stage_key="text", unconditional=False)
    uncond = official_checkpoint(folder / "k600.ckpt", spec["uncond_spec"], 13, cond_token_num=0, hybrid=False,
                                 starts_with_bov=False, cond_stage_key="video", unconditional=True)
    return load_transformer(hybrid), load_transformer(uncond)


# --- official checkpoints reproduce the goldens ----------------------------------------------------------

@torch.no_grad()
def test_hybrid_text_model_matches_golden(official, golden):
    g, lm = golden("nbp_gpt_small.npz"), official[0]
    assert (lm.config.hybrid, lm.config.text_vocab, lm.config.cond_len, lm.config.vocab_size) == (True, 1000, 8, 65016)
    codes, text = torch.from_numpy(g["video_codes"]), torch.from_numpy(g["text_ids"])
    sequence = lm.layout.sequence(codes, text + S)
    np.testing.assert_array_equal(sequence[:, :-S].numpy(), g["hybrid_input_ids"])
    np.testing.assert_array_equal(lm.layout.mask(88, "cpu").dense.numpy(), g["hybrid_mask"][0].astype(bool))
    logits = lm(sequence[:, :-S])[:, 8:]
    np.testing.assert_allclose(logits[..., :32].numpy(), g["hybrid_logits_head"], atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), g["hybrid_argmax"])
    np.testing.assert_allclose(lm.nll(codes, text_ids=text).numpy(), g["hybrid_nll"], atol=1e-4)
    np.testing.assert_array_equal(generate(lm, 80, text_ids=text, greedy=True).numpy(), g["hybrid_greedy_codes"])


@torch.no_grad()
def test_unconditional_block_model_matches_golden(official, golden):
    g, lm = golden("nbp_gpt_small.npz"), official[1]
    codes = torch.from_numpy(g["video_codes"])
    np.testing.assert_array_equal(lm.layout.mask(64, "cpu").dense.numpy(), g["uncond_mask"][0].astype(bool))
    logits = lm(codes[:, :-S])
    np.testing.assert_allclose(logits[..., :32].numpy(), g["uncond_logits_head"], atol=1e-4)
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), g["uncond_argmax"])
    np.testing.assert_allclose(lm.nll(codes).numpy(), g["uncond_nll"], atol=1e-4)
    predicted = generate(lm, 48, context=torch.from_numpy(g["predict_prefix"]), greedy=True)
    np.testing.assert_array_equal(predicted.numpy(), g["predict_greedy"])


def test_foreign_checkpoints_are_refused(tmp_path, official_magvit2_checkpoint):
    with pytest.raises(CheckpointError, match="not an NBP language-model checkpoint"):
        load_transformer(official_magvit2_checkpoint)
    tok_file = tmp_path / "tok.safetensors"
    from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
    save_model(VideoTokenizer(from_preset(TokenizerConfig, "tiny")), tok_file)
    with pytest.raises(CheckpointError, match="holds a 'tokenizer' model, not a 'transformer'"):
        load_transformer(tok_file)


# --- masks -----------------------------------------------------------------------------------------------

def naive_mask(n, block, prefix, hybrid):
    """The official construction, written with loops."""
    mask = [[j <= i for j in range(n)] for i in range(n)]
    for i in range(n):
        for j in range(prefix):
            mask[i][j] = True
    start = prefix + block if hybrid else prefix
    for i in range(start, n, block):
        for row in range(i, min(i + block, n)):
            for col in range(start, min(i + block, n)):
                mask[row][col] = True
    return torch.tensor(mask)


@pytest.mark.parametrize("n, block, prefix, hybrid", [(64, 16, 0, False), (88, 16, 8, True), (40, 4, 3, False),
                                                      (37, 5, 2, True), (20, 1, 0, False)])
def test_masks_match_the_naive_construction(n, block, prefix, hybrid):
    torch.testing.assert_close(nbp_mask(n, block, prefix, hybrid), naive_mask(n, block, prefix, hybrid))


def test_mask_building_blocks():
    assert block_ids(7, 3, start=2).tolist() == [0, 1, 2, 2, 2, 3, 3]
    assert block_causal_mask(4, 2).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert with_visible_prefix(block_causal_mask(3, 1), 2)[0].tolist() == [True, True, False]


@pytest.mark.parametrize("n, block, prefix, hybrid, chunk", [(88, 16, 8, True, 32), (64, 4, 1, False, 24),
                                                             (20, 1, 0, False, 7)])
def test_key_extents_cover_exactly_the_visible_columns(n, block, prefix, hybrid, chunk):
    mask = nbp_mask(n, block, prefix, hybrid)
    extents = key_extents(mask, chunk)
    assert [(a, b) for a, b, _ in extents] == [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    for start, stop, keys in extents:
        assert not mask[start:stop, keys:].any() and mask[start:stop, keys - 1].any()


def test_chunked_attention_equals_one_masked_call():
    """A mask carrying key extents is attended chunk by chunk: same outputs and gradients as one SDPA call."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 70, 8, requires_grad=True) for _ in range(3))
    mask = nbp_mask(70, 5, 3, hybrid=True)
    chunked = AttentionMask(mask, chunk=16)
    outputs, grads = [], []
    for m in (mask, chunked):
        y = attend(q, k, v, m)
        (y * torch.linspace(-1, 1, 8)).sum().backward()
        outputs.append(y.detach())
        grads.append([t.grad.clone() for t in (q, k, v)])
        for t in (q, k, v):
            t.grad = None
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    long_mask = small_config("modern", "begin-class", 4).layout.mask(600, "cpu")  # what the model's forward uses
    assert long_mask.extents == key_extents(long_mask.dense, 256) and long_mask.extents[0][2] == 257


@torch.no_grad()
@pytest.mark.filterwarnings("ignore:.*flex_attention.*")
@pytest.mark.parametrize("arch, layout", [("modern", "begin-class"), ("nbp-gpt", "hybrid-text")])
def test_flex_attention_equals_sdpa(arch, layout):
    """The FlexAttention path (eager on CPU, forward only; compiled on CUDA) over the same training mask."""
    sdpa = Transformer(small_config(arch, layout, 4)).eval()
    flex = Transformer(from_dict(TransformerConfig, {**vars(sdpa.config), "attention": "flex"})).eval()
    flex.load_state_dict(sdpa.state_dict())
    ids = torch.randint(0, sdpa.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flex(ids), sdpa(ids), rtol=1e-5, atol=1e-5)


# --- KV-cache decoding equals the full forward -------------------------------------------------------------

LAYOUTS = {
    "begin-class": dict(condition="class", num_classes=5, cond_len=1),
    "hybrid-text": dict(hybrid=True, condition="text", cond_len=3, text_vocab=50),
    "no-begin": dict(begin=False),
}


def small_config(arch, layout, block):
    return from_dict(TransformerConfig, dict(arch=arch, n_layer=2, n_head=2, n_embd=24, video_vocab=97,
                                             latent_shape=[3, 4, 4], block=block, **LAYOUTS[layout]))


CACHE_CASES = [(arch, layout, block) for arch in ("nbp-gpt", "modern") for layout in sorted(LAYOUTS)
               for block in (1, 4, 16) if not (layout == "hybrid-text" and block == 1)]  # hybrid needs S > 1


@torch.no_grad()
@pytest.mark.parametrize("transposed_keys", [False, True])  # SDPA, or two matmuls over the transposed keys
@pytest.mark.parametrize("arch, layout, block", CACHE_CASES)
def test_cached_decoding_equals_full_forward(arch, layout, block, transposed_keys):
    torch.manual_seed(0)
    lm = Transformer(small_config(arch, layout, block)).eval()
    cfg = lm.config
    codes = torch.randint(0, 97, (2, 48))
    cond = lm.condition_ids(text_ids=torch.randint(0, 50, (2, 3)) if cfg.condition == "text" else None,
                            class_ids=torch.tensor([1, 4]) if cfg.condition == "class" else None)
    sequence = lm.layout.inputs(codes, cond)
    full = lm(sequence)
    start = cfg.cond_len + (block if cfg.hybrid else 0)
    groups = block_ids(sequence.shape[1], block, start)
    prefill = cfg.cond_len + (1 if cfg.hybrid else block)  # the prompt of generate(): prefix and begin token(s)
    cache = KVCache(cfg, 2, sequence.shape[1], "cpu", torch.float32, transposed_keys)
    pieces = [lm(sequence[:, :prefill], mask=lm.layout.mask(prefill, "cpu"), cache=cache)]
    position = prefill
    while position < sequence.shape[1]:
        end = position + int((groups == groups[position]).sum()) if position >= start else position + 1
        pieces.append(lm(sequence[:, position:end], cache=cache))
        position = end
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_greedy_generation_is_consistent_with_teacher_forcing(layout):
    """Generated codes are the argmax of the full forward over themselves, step by step."""
    torch.manual_seed(1)
    lm = Transformer(small_config("modern", layout, 4)).eval()
    cfg = lm.config
    kwargs = {"class_ids": torch.tensor([2, 3])} if cfg.condition == "class" else {}
    kwargs |= {"text_ids": torch.randint(0, 50, (2, 3))} if cfg.condition == "text" else {}
    context = torch.randint(0, 97, (2, 8)) if not cfg.begin else None
    codes = generate(lm, 24, context=context, greedy=True, **kwargs)
    everything = codes if context is None else torch.cat([context, codes], dim=1)
    cond = lm.condition_ids(kwargs.get("text_ids"), kwargs.get("class_ids"))
    logits = lm(lm.layout.inputs(everything, cond))[:, cfg.cond_len:]
    predicted = logits[..., cfg.video_offset:].argmax(-1)
    expected = everything if cfg.begin else everything[:, cfg.block:]
    torch.testing.assert_close(predicted[:, -24:], expected[:, -24:], rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("arch, layout, block", [case for case in CACHE_CASES if case[2] > 1])
def test_static_cache_decoding_equals_the_dynamic_cache(arch, layout, block):
    """The fixed-shape step of CUDA-graph decoding (run eagerly here) samples the same codes, guided or not."""
    torch.manual_seed(3)
    lm = Transformer(small_config(arch, layout, block)).eval()
    torch.nn.init.normal_(lm.uncond_embedding)
    cfg = lm.config
    kwargs = {"class_ids": torch.tensor([2, 3])} if cfg.condition == "class" else {}
    kwargs |= {"text_ids": torch.randint(0, 50, (2, 3))} if cfg.condition == "text" else {}
    kwargs |= {"context": torch.randint(0, 97, (2, block))} if not cfg.begin else {}
    kwargs |= {"cfg_scale": 2.0, "cfg_schedule": "linear"} if cfg.condition != "none" else {}
    draw = lambda decoding, **sampling: generate(lm, 32, decoding=decoding, **kwargs, **sampling,
                                                 generator=torch.Generator().manual_seed(0))
    for sampling in (dict(greedy=True), dict(top_k=40, top_p=0.9, temperature=1.5)):
        static = draw("static", **sampling)
        torch.testing.assert_close(static, draw("dynamic", **sampling), rtol=0, atol=0)
    assert len(set(static.flatten().tolist())) > 10  # the sampled codes vary


def test_decoding_choices_are_checked():
    lm = Transformer(small_config("modern", "begin-class", 4)).eval()
    with pytest.raises(ConfigError, match="decoding must be one of"):
        generate(lm, 8, class_ids=[1], decoding="fast")
    with pytest.raises(InputError, match="need the model on a CUDA device"):
        generate(lm, 8, class_ids=[1], decoding="cuda-graphs")


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(4)
    plain = Transformer(small_config("modern", "begin-class", 4)).train()
    recomputed = Transformer(from_dict(TransformerConfig, {**vars(plain.config), "activation_checkpointing": True}))
    recomputed.load_state_dict(plain.state_dict())
    ids = torch.randint(0, plain.config.vocab_size, (2, 40))
    grads, calls = [], []
    for lm in (plain, recomputed):
        calls.append([])
        lm.layers[0].mlp.register_forward_pre_hook(lambda *_, seen=calls[-1]: seen.append(1))
        lm(ids).square().mean().backward()
        grads.append([p.grad for p in lm.parameters()])
    assert [len(c) for c in calls] == [1, 2]  # the checkpointed layer ran again in the backward
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_step_counts():
    hybrid = small_config("nbp-gpt", "hybrid-text", 16).layout
    assert hybrid.step_widths(0, 48) == [1] * 16 + [16, 16]  # 16 tokens one by one, then 2 blocks
    assert hybrid.step_widths(5, 27) == [1] * 11 + [16]  # the rest of the first row, then a block (cut after)
    assert small_config("modern", "begin-class", 16).layout.step_widths(0, 48) == [16] * 3
    assert small_config("modern", "no-begin", 4).layout.step_widths(4, 44) == [4] * 11
    big = TransformerConfig(n_layer=1, n_head=1, n_embd=6, hybrid=True, condition="text", cond_len=8, text_vocab=10)
    assert len(big.layout.step_widths(0, 1280)) == 95


# --- guidance and samplers ----------------------------------------------------------------------------

@torch.no_grad()
def test_guidance_combines_conditional_and_unconditional_logits():
    torch.manual_seed(2)
    lm = Transformer(small_config("modern", "begin-class", 16)).eval()
    torch.nn.init.normal_(lm.uncond_embedding)
    first = lambda **kw: generate(lm, 16, class_ids=torch.tensor([1]), greedy=True, **kw)
    torch.testing.assert_close(first(cfg_scale=1.0), first())
    cfg = lm.config
    prompt = lm.layout.sequence(torch.zeros(1, 0, dtype=torch.long), lm.condition_ids(class_ids=[1]))
    cond = lm(prompt)[:, -16:, cfg.video_offset:]
    uncond = lm(prompt, drop_condition=torch.tensor([True]))[:, -16:, cfg.video_offset:]
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(first(cfg_scale=3.0), guide(cond, uncond, 3.0).argmax(-1))


def test_samplers():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, False, True]]
    p = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03 for ids 1, 2, 0, 3
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=float(p[1] + p[2]) + 0.01)).tolist() == [[False, False, False, True]]
    torch.testing.assert_close(filter_logits(logits, temperature=2.0), logits / 2)
    assert sample(logits, greedy=True).tolist() == [1]
    draws = lambda seed: sample(logits.expand(500, -1), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draws(0), draws(0)) and not torch.equal(draws(0), draws(1))
    assert abs((draws(0) == 1).float().mean().item() - p[1].item()) < 0.08
    assert guidance_scale(4.0, 0, 5, "linear") == 1.0 and guidance_scale(4.0, 4, 5, "linear") == 4.0


# --- configs, files, bad input ---------------------------------------------------------------------------

def test_presets_and_save_reload(tmp_path):
    assert from_preset(TransformerConfig, "700m").n_embd == 1536
    big = Transformer(from_preset(TransformerConfig, "nbp-gpt-700m", n_layer=1))
    assert big.config.vocab_size == 16 + 32000 + 64000 and big.pos_emb.shape[1] == 8 + 1280
    lm = Transformer(from_preset(TransformerConfig, "tiny", **CLASSES)).eval()
    again = load_model(save_model(lm, tmp_path / "lm.safetensors"))
    codes = torch.randint(0, 64000, (2, 48))
    torch.testing.assert_close(again.nll(codes, class_ids=[0, 3]), lm.nll(codes, class_ids=[0, 3]))
    assert load_transformer(tmp_path / "lm.safetensors", dtype=torch.bfloat16).tok_emb.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("call, message", [
    (lambda lm: lm.nll(torch.full((1, 48), 64000), class_ids=[0]), "must lie in \\[0, 64000\\)"),
    (lambda lm: lm.nll(torch.zeros(1, 48, dtype=torch.long), class_ids=[7]), "class ids must lie in \\[0, 4\\)"),
    (lambda lm: lm.nll(torch.zeros(1, 48, dtype=torch.long)), "pass class_ids"),
    (lambda lm: generate(lm, 16, class_ids=[0], context=torch.zeros(1, 5, dtype=torch.long)), "not a whole number"),
    (lambda lm: generate(lm, 10, class_ids=[0]), "num_tokens=10 is not a whole number"),
])
def test_bad_input_is_refused(call, message):
    lm = Transformer(from_preset(TransformerConfig, "tiny", **CLASSES)).eval()
    with pytest.raises(ValueError, match=message):
        call(lm)


def test_too_many_positions_for_learned_embeddings(official):
    with pytest.raises(ValueError, match="positions requested; this model has 96"):
        generate(official[1], 112, context=torch.zeros(1, 16, dtype=torch.long), greedy=True)


@pytest.mark.parametrize("overrides, message", [
    (dict(n_embd=30, n_head=4), "not divisible by n_head"),
    (dict(block=5), "does not tile"),
    (dict(condition="class", cond_len=0), "needs cond_len > 0"),
    (dict(hybrid=True, begin=False), "hybrid models start with a begin token"),
    (dict(attention="flash"), "attention one of"),
])
def test_invalid_transformer_configs(overrides, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TransformerConfig, {**dict(n_layer=1, n_head=2, n_embd=24, latent_shape=[1, 4, 4]), **overrides})


@torch.no_grad()
def test_text_prompts_through_the_byte_tokenizer():
    from nbp.data.text import ByteTokenizer, encode_texts

    lm = Transformer(from_dict(TransformerConfig, dict(n_layer=1, n_head=2, n_embd=24, latent_shape=[1, 4, 4],
                                                       condition="text", cond_len=8, text_vocab=257))).eval()
    ids = encode_texts(ByteTokenizer(), ["yo yo"], 8)
    assert ids.tolist() == [[121, 111, 32, 121, 111, 256, 256, 256]]
    torch.testing.assert_close(generate(lm, 16, text="yo yo", greedy=True), generate(lm, 16, text_ids=ids, greedy=True))
    with pytest.warns(UserWarning, match="has 16 tokens; the model reads 8: truncated"):
        generate(lm, 16, text="apply eye makeup", greedy=True)


def test_fast_sampler_draws_from_the_filtered_distribution():
    from nbp.generation.sampling import sample_logits

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    for top_k, top_p in [(None, None), (10, None), (None, 0.6), (10, 0.5)]:
        reference = filter_logits(logits, 0.7, top_k, top_p).softmax(-1)
        draws = sample_logits(logits.expand(4000, 3, 50), 0.7, top_k, top_p,
                              generator=torch.Generator().manual_seed(1))
        allowed = reference > 0
        assert allowed.gather(-1, draws.T).all()  # only candidates of the filtered distribution
        frequencies = torch.stack([torch.bincount(draws[:, i], minlength=50) for i in range(3)]).float() / 4000
        assert (frequencies - reference).abs().max() < 0.03
    assert torch.equal(sample_logits(logits, greedy=True), logits.argmax(-1))


@pytest.mark.parametrize("path", ["kept_numpy", "kept_torch"])
def test_both_sampler_paths_keep_exactly_the_filtered_distribution(path):
    from nbp.generation import sampling

    keep = getattr(sampling, path)
    logits = 2 * torch.randn(5, 300, generator=torch.Generator().manual_seed(2))
    for top_k, top_p in [(None, None), (40, None), (None, 0.6), (40, 0.5), (300, 1.0), (1, 0.9), (40, 0.01)]:
        weights, candidates = keep(logits / 0.7, top_k, top_p)
        dense = weights if candidates is None else torch.zeros_like(logits).scatter(-1, candidates, weights)
        expected = filter_logits(logits, 0.7, top_k, top_p).softmax(-1)
        assert torch.equal(dense > 0, expected > 0), (top_k, top_p)
        torch.testing.assert_close(dense / dense.sum(-1, keepdim=True), expected)


def test_nucleus_threshold_keeps_the_sorted_prefix_that_reaches_p():
    from nbp.generation.sampling import nucleus_threshold

    probs = torch.rand(6, 200, generator=torch.Generator().manual_seed(3)).pow(4).softmax(-1) ** 2
    probs = probs / probs.sum(-1, keepdim=True)
    for top_p in (0.1, 0.5, 0.9):
        kept = probs >= nucleus_threshold(probs, top_p)
        sorted_probs, order = probs.sort(-1, descending=True)
        prefix = (sorted_probs.cumsum(-1) - sorted_probs) < top_p  # the tokens before the mass reaches p, + 1
        expected = torch.zeros_like(kept).scatter(-1, order, prefix)
        assert torch.equal(kept, expected)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_decode_attention_equals_sdpa(dtype, tolerance):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, dtype=dtype) for n in (16, 80, 80))
    keys_t = k.transpose(-2, -1).contiguous().transpose(-2, -1)  # as a KV cache stores them for the matmul path
    mask = block_causal_mask(80, 16)[-16:]  # the last block's rows: a decoding step with a mask
    for m in (None, mask):
        expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=m)
        with torch.no_grad():
            assert torch.equal(attend(q, keys_t, v, m), decode_attention(q, keys_t, v, m))
            for keys in (k, keys_t):
                got = attend(q, keys, v, m)
                assert got.dtype == dtype
                torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("flags, bf16_matmuls", [({"avx512_bf16"}, True), ({"avx2"}, True),
                                                 ({"amx_bf16", "avx512_bf16"}, False)])
def test_the_kv_cache_keeps_keys_transposed_only_where_decoding_attends_by_matmuls(monkeypatch, flags, bf16_matmuls):
    from nbp.models import transformer_attention as attention

    monkeypatch.setattr(attention, "cpu_flags", lambda: frozenset(flags))
    attention.matmul_decoding.cache_clear()
    try:
        cfg = small_config("modern", "no-begin", 4)
        assert KVCache(cfg, 1, 8, "cpu", torch.bfloat16).transposed_keys == bf16_matmuls
        assert not KVCache(cfg, 1, 8, "cpu", torch.float32).transposed_keys
    finally:
        attention.matmul_decoding.cache_clear()


def test_layers_keep_the_official_state_dict_names():
    """The layers are `layers` in code and `blocks.N` in files (the official checkpoints' and older nbp files')."""
    lm = Transformer(small_config("nbp-gpt", "hybrid-text", 4))
    keys = list(lm.state_dict())
    assert "blocks.0.attn.query.weight" in keys and not any(k.startswith("layers.") for k in keys)
    again = Transformer(small_config("nbp-gpt", "hybrid-text", 4))
    again.load_state_dict(lm.state_dict())
    assert torch.equal(again.layers[1].mlp[0].weight, lm.layers[1].mlp[0].weight)
    again.load_state_dict(dict(lm.named_parameters()) | dict(lm.named_buffers()))  # code names load too (ZeRO)


@pytest.mark.cuda
@torch.no_grad()
@pytest.mark.parametrize("decoding", ["dynamic", "cuda-graphs"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_bf16_decoding_on_cuda_equals_the_full_forward(layout, decoding):
    """On the GPU (SDPA chunks for the prompt, explicit matmuls or replayed graphs for the steps), in bf16: greedy
    codes are the argmax of the full forward over themselves."""
    torch.manual_seed(1)
    lm = Transformer(small_config("modern", layout, 4)).cuda().to(torch.bfloat16).eval()
    kwargs = {"class_ids": [2, 3]} if lm.config.condition == "class" else {}
    kwargs |= {"text_ids": torch.randint(0, 50, (2, 3))} if lm.config.condition == "text" else {}
    context = torch.randint(0, 97, (2, 8)).cuda() if not lm.config.begin else None
    codes = generate(lm, 24, context=context, greedy=True, decoding=decoding, **kwargs)
    everything = codes if context is None else torch.cat([context, codes], dim=1)
    logits = lm.layout.video_outputs(lm(lm.layout.inputs(everything, lm.condition_ids(**kwargs))))
    expected = everything if lm.config.begin else everything[:, lm.config.block:]
    agree = (logits[..., lm.config.video_offset:].argmax(-1)[:, -24:] == expected[:, -24:]).float().mean()
    assert agree > 0.95  # bf16 rounding differs between the two paths; near-ties may flip
