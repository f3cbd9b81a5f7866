"""The GPU path: each fast path against a reference path on the same GPU (marked `cuda`, skipped without one).

`NBP_TEST_DEVICE=cpu pytest tests/test_cuda.py` runs them on the CPU where a CPU can (FlexAttention has no CPU
backward; DeepSpeed's GPU run needs a GPU), which checks the tests themselves.
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nbp.checkpoint import load_magvit2
from nbp.config import from_preset
from nbp.generation import generate as generate_codes
from nbp.generation.far import FARSamplingConfig, LatentStepper, generate_latents
from nbp.metrics import psnr
from nbp.models.far import FAR, FARConfig
from nbp.models.fused_ce import linear_cross_entropy
from nbp.models.transformer import Transformer, TransformerConfig
from nbp.models.transformer_attention import AttentionMask, attend, nbp_mask
from nbp.training.lm import train_lm
from nbp.training.loggers import read_metrics
from nbp.training.tokenizer import train_tokenizer

import test_lm_training
import test_tokenizer_training
from test_tokenizer import near_bin_edge

DEVICE = os.environ.get("NBP_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.cuda
ON_GPU = ["run.accelerator=gpu", "run.precision=bf16-mixed"] if DEVICE == "cuda" else ["run.precision=bf16-mixed"]

tokens = test_lm_training.tokens  # the tiny LM's token dataset (fixture)
synthetic = test_tokenizer_training.synthetic  # the tokenizer's video dataset (fixture)


def gpu_only(what: str) -> None:
    if DEVICE != "cuda":
        pytest.skip(f"{what} needs a GPU")


def output_and_grads(fn, tensors, weights):
    tensors = [t.detach().clone().requires_grad_() for t in tensors]
    out = fn(*tensors)
    (out * weights).sum().backward()
    return [out.detach()] + [t.grad for t in tensors]


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_attention_equals_dense_masked_attention(backend, dtype):
    """SDPA over the mask's chunks and compiled FlexAttention over its tiles: outputs and gradients as close to the
    float64 result as one dense masked SDPA call in the same dtype (within 3x its error)."""
    if backend == "flex":
        gpu_only("FlexAttention's backward")
    mask = AttentionMask(nbp_mask(1280, 16, prefix=1, device=DEVICE))
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v, weights = (torch.randn(2, 4, 1280, 64, generator=g, device=DEVICE, dtype=dtype) for _ in range(4))
    ours = output_and_grads(lambda *t: attend(*t, mask, backend), (q, k, v), weights)
    dense = output_and_grads(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask.dense), (q, k, v), weights)
    exact = output_and_grads(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=mask.dense),
                             [t.double() for t in (q, k, v)], weights.double())
    for a, b, e in zip(ours, dense, exact):
        our_error, dense_error = ((x.double() - e).abs().max().item() for x in (a, b))
        assert our_error <= 3 * dense_error + 1e-6, (our_error, dense_error)


def test_fused_head_and_cross_entropy_equal_the_plain_loss():
    """bf16 autocast, a 64,000-code head: the chunked loss and its gradients against the plain logits path."""
    g = torch.Generator(device=DEVICE).manual_seed(2)
    hidden = torch.randn(256, 128, generator=g, device=DEVICE, requires_grad=True)
    weight = (0.1 * torch.randn(64_000, 128, generator=g, device=DEVICE)).requires_grad_()
    targets = torch.randint(0, 64_000, (256,), generator=g, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, targets)[0].mean()
    loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        reference = F.cross_entropy((hidden @ weight.T).float(), targets)
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grads[0], hidden.grad, rtol=2e-2, atol=2e-4)
    torch.testing.assert_close(grads[1], weight.grad, rtol=2e-2, atol=2e-5)


@torch.no_grad()
def test_tokenizer_is_exact_in_fp32_and_within_40_db_of_it_in_bf16(official_magvit2_checkpoint, golden):
    g = golden("magvit2_nbp_r32_t9.npz")
    tokenizer = load_magvit2(official_magvit2_checkpoint, resolution=32).to(DEVICE)
    video = torch.from_numpy(g["video"]).to(DEVICE)
    _, indices = tokenizer.encode(video, quantize=True)
    edge = near_bin_edge(tokenizer, tokenizer.encode(video, quantize=False)).cpu()
    same = indices.cpu().numpy() == g["indices"]
    assert same[~edge.numpy()].all(), f"{int((~same).sum())} indices differ away from bin edges"
    golden_indices = torch.from_numpy(g["indices"]).to(DEVICE)
    recon = tokenizer.decode_from_code_indices(golden_indices)
    np.testing.assert_allclose(recon.cpu().numpy(), g["recon"], atol=1e-4)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):  # the channels-last bf16 kernels
        recon_bf16 = tokenizer.decode_from_code_indices(golden_indices).float()
        latents_bf16 = tokenizer.encode(video, quantize=False).float()
    assert psnr(recon_bf16, recon, data_range=2.0).item() > 40  # the decoder's output range is [-1, 1]
    latents = tokenizer.encode(video, quantize=False)
    span = (latents.max() - latents.min()).item()
    assert psnr(latents_bf16, latents, data_range=span).item() > 40  # before FSQ, whose bins may flip near edges


def far_long_rollout(dtype) -> tuple[FAR, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A tiny FAR_Long (W = 4) and the inputs of a rollout past its window: 6 context frames, noise for 8 new ones,
    actions for all 14."""
    torch.manual_seed(0)
    far = FAR(from_preset(FARConfig, "far-tiny-long", sample_size=8)).to(DEVICE, dtype).eval()
    g = torch.Generator().manual_seed(1)
    context = torch.randn(2, 6, 32, 8, 8, generator=g).to(DEVICE, dtype)
    noise = torch.randn(2, 8, 32, 8, 8, generator=g).to(DEVICE)
    actions = torch.randint(0, 4, (2, 14), generator=g).to(DEVICE)
    return far, context, noise, actions


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_far_sampling_with_caches_equals_sampling_without(dtype):
    """FAR_Long past its window (6 context frames, 8 new, W = 4): the KV and two-level caches change nothing."""
    far, context, noise, actions = far_long_rollout(dtype)
    cached, plain = (generate_latents(far, 8, context, steps=4, cfg_scale=1.5, actions=actions, noise=noise, use_cache=cache)
                     for cache in (True, False))
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(cached.float(), plain.float(), atol=tolerance, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_far_frames_replayed_as_cuda_graphs_equal_the_eager_steps(dtype):
    """FAR_Long past its window with action guidance: each frame's steps replayed as one CUDA graph give exactly the
    eager static steps, and those the dynamic cache's to rounding."""
    gpu_only("CUDA graphs")
    far, context, noise, actions = far_long_rollout(dtype)
    graphs, static, dynamic = (generate_latents(far, 8, context, steps=4, cfg_scale=1.5, actions=actions, noise=noise,
                                        decoding=decoding) for decoding in ("cuda-graphs", "static", "dynamic"))
    torch.testing.assert_close(graphs, static, atol=0, rtol=0)
    tolerance = 1e-4 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(static.float(), dynamic.float(), atol=tolerance, rtol=0)


@torch.no_grad()
def test_an_open_ended_far_session_replays_cuda_graphs_as_the_eager_steps():
    """The stepper as a played session drives it (no frame count; `long_frames` bounds the context, so the graph's
    buffers are sized once): each frame replayed as a CUDA graph gives exactly the eager fixed-shape steps."""
    gpu_only("CUDA graphs")
    far, context, noise, actions = far_long_rollout(torch.float32)
    runs = []
    for decoding in ("cuda-graphs", "static"):
        sampling = FARSamplingConfig(steps=4, cfg_scale=1.5, decoding=decoding, long_frames=2)
        stepper = LatentStepper(far, context, sampling, actions=actions[:, :6])
        runs.append(torch.stack([stepper.step(noise[:, k], actions[:, 6 + k]) for k in range(8)], dim=1))
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)


def hybrid_lm(dtype) -> Transformer:
    """The official layout (nbp-gpt, text prefix, first row token by token) at 4 layers, 64,000 codes."""
    torch.manual_seed(0)
    config = TransformerConfig(arch="nbp-gpt", n_layer=4, n_head=4, n_embd=256, hybrid=True, condition="text",
                               cond_len=8, text_vocab=32000)
    return Transformer(config).to(DEVICE, dtype).eval()


@torch.no_grad()
def test_cuda_graph_decoding_replays_the_static_step_exactly():
    """Greedy and sampled (top-k 16,000, top-p 0.9, guidance; one generator or one per row): replayed graphs give
    the eager static step's codes (the same kernels and draws); in fp32 both give the dynamic cache's greedy codes."""
    gpu_only("CUDA graphs")
    text = torch.randint(0, 32000, (2, 8), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    for dtype in (torch.float32, torch.bfloat16):
        lm = hybrid_lm(dtype)
        run = lambda decoding, lm=lm, **kw: generate_codes(lm, 64, text_ids=text, decoding=decoding, **kw)
        greedy = run("cuda-graphs", greedy=True)
        assert torch.equal(greedy, run("static", greedy=True))
        if dtype == torch.float32:
            assert torch.equal(greedy, run("dynamic", greedy=True))
        official = dict(top_k=16000, top_p=0.9, cfg_scale=2.0)
        sampled = [run(decoding, generator=torch.Generator(DEVICE).manual_seed(1), **official)
                   for decoding in ("cuda-graphs", "static", "cuda-graphs")]
        assert torch.equal(sampled[0], sampled[2]) and torch.equal(sampled[0], sampled[1])
        assert len(set(sampled[0].flatten().tolist())) > 50
        per_row = [run(decoding, generator=[torch.Generator(DEVICE).manual_seed(i) for i in (5, 6)], **official)
                   for decoding in ("cuda-graphs", "static")]  # as `nbp sample` draws: one seed per sample
        assert torch.equal(*per_row)


@torch.no_grad()
def test_compiled_graph_decoding_agrees_with_the_full_forward():
    """The compiled step's fused kernels round differently: greedy codes are the argmax of the full forward over
    themselves (as for the dynamic cache in bf16)."""
    gpu_only("compiled CUDA graphs")
    lm = hybrid_lm(torch.bfloat16)
    text = torch.randint(0, 32000, (2, 8), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    codes = generate_codes(lm, 64, text_ids=text, greedy=True, decoding="compiled")
    logits = lm.layout.video_outputs(lm(lm.layout.inputs(codes, lm.condition_ids(text_ids=text))))
    agree = (logits[..., lm.config.video_offset:].argmax(-1)[:, -64:] == codes).float().mean()
    assert agree > 0.95


def test_bf16_mixed_training_of_the_tiny_lm_lowers_its_loss(tokens, tmp_path):
    train_lm(test_lm_training.config(tokens, tmp_path / "lm", "run.steps=12", *ON_GPU))
    losses = [float(r["train/loss"]) for r in read_metrics(tmp_path / "lm") if r.get("train/loss")]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])


def test_bf16_mixed_training_of_the_tiny_tokenizer_lowers_its_loss(synthetic, tmp_path):
    train_tokenizer(test_tokenizer_training.config(synthetic, tmp_path / "tok", *ON_GPU))
    rec = [float(r["train/rec"]) for r in read_metrics(tmp_path / "tok") if r.get("train/rec")]
    assert len(rec) == 14 and sum(rec[-3:]) < 0.8 * sum(rec[:3])


def test_deepspeed_zero2_on_one_gpu_runs_and_exports(tokens, tmp_path):
    gpu_only("DeepSpeed on NCCL")
    path = train_lm(test_lm_training.config(tokens, tmp_path / "zero", "run.strategy=deepspeed_stage_2", "run.steps=12",
                                            *ON_GPU))
    losses = [float(r["train/loss"]) for r in read_metrics(tmp_path / "zero") if r.get("train/loss")]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert all(torch.isfinite(w).all() for w in test_lm_training.final_weights(path).values())
