import json
import warnings

import numpy as np
import pytest
import torch

from nbp.checkpoint import CheckpointError, load_model, load_state_dict_strict, save_model
from nbp.config import ConfigError, build_config, from_preset
from nbp.download import load_magvit2
from nbp.models.quantizer import BoundedFSQ
from nbp.models.tokenizer import CausalConv3d, TokenizerConfig, VideoTokenizer

from conftest import golden_dir


def tiny_tokenizer(seed=0, **overrides):
    torch.manual_seed(seed)
    return VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32, **overrides)).eval()


# --- official checkpoint -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def official(official_magvit2_checkpoint):
    return load_magvit2(official_magvit2_checkpoint, resolution=32)


def test_official_architecture_matches_spec(official):
    spec = json.loads((golden_dir() / "magvit2_nbp_spec.json").read_text())
    assert [(k, list(v.shape)) for k, v in official.state_dict().items()] == [(k, s) for k, s in spec]
    assert sum(p.numel() for p in official.parameters()) == 370_372_105


EDGE_TOLERANCE = 1e-3  # bounded-latent units (one FSQ bin = 1): far above float rounding between CPU kernels


def near_bin_edge(tokenizer, latents: torch.Tensor) -> torch.Tensor:
    """(B, T', h, w) True where some channel's bounded latent lies within EDGE_TOLERANCE of a rounding edge, where
    another machine's convolution kernels may round it the other way."""
    bounded = tokenizer.quantizer.unrounded(latents.movedim(1, -1))  # (B, T', h, w, 6)
    return ((bounded - bounded.round()).abs() > 0.5 - EDGE_TOLERANCE).any(-1)


@torch.no_grad()
def test_official_checkpoint_reproduces_golden(official, golden):
    """Indices equal the official ones everywhere but at latents within EDGE_TOLERANCE of a bin edge (none of the
    golden's own latents is that close on the machine that made them; a wrong bound or rounding moves ~2%)."""
    g = golden("magvit2_nbp_r32_t9.npz")
    video = torch.from_numpy(g["video"])
    codes, indices = official.encode(video, quantize=True)
    assert indices.dtype == torch.int32 and indices.shape == (1, 3, 4, 4)
    edge = near_bin_edge(official, official.encode(video, quantize=False))
    assert int(edge.sum()) <= 4  # the tolerance leaves at least 44 of the 48 positions exact
    same = indices.numpy() == g["indices"]
    assert same[~edge.numpy()].all(), f"{int((~same).sum())} indices differ away from bin edges"
    np.testing.assert_allclose(codes.numpy()[:, :, ~edge[0]], g["codes"][:, :, ~edge[0].numpy()], atol=1e-4)
    indices = torch.from_numpy(g["indices"])  # the decoder from the official indices: exact arithmetic again
    recon = official.decode_from_code_indices(indices)
    np.testing.assert_allclose(recon.numpy(), g["recon"], atol=1e-4)
    flat = official.decode_from_code_indices(indices.flatten(1).long())
    torch.testing.assert_close(flat, recon, rtol=0, atol=0)


# --- invariants ------------------------------------------------------------------------------------

def first_latent_covering(frame, factor=4):
    return -(-frame // factor)  # ceil: latent j covers frames 4j-3 .. 4j, latent 0 frame 0


@torch.no_grad()
@pytest.mark.parametrize("frame", [0, 3, 4, 5, 12, 16])
def test_encoder_is_causal(frame):
    tok = tiny_tokenizer()
    video = torch.rand(1, 3, 17, 32, 32, generator=torch.Generator().manual_seed(1))
    changed = video.clone()
    changed[:, :, frame] = 1 - changed[:, :, frame]
    z0, z1 = tok.encode(video, quantize=False), tok.encode(changed, quantize=False)
    j = first_latent_covering(frame)
    torch.testing.assert_close(z1[:, :, :j], z0[:, :, :j], rtol=0, atol=0)
    assert (z1[:, :, j] - z0[:, :, j]).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("latent", [1, 2, 4])
def test_decoder_is_causal(latent):
    tok = tiny_tokenizer()
    codes = tok.quantizer.indices_to_codes(torch.randint(0, 64000, (1, 5, 4, 4), generator=torch.Generator().manual_seed(2)))
    changed = codes.clone()
    changed[:, :, latent] = -changed[:, :, latent]
    v0, v1 = tok.decode(codes), tok.decode(changed)
    first = 4 * latent - 3  # the first frame latent `latent` decodes to
    torch.testing.assert_close(v1[:, :, :first], v0[:, :, :first], rtol=0, atol=0)
    assert (v1[:, :, first] - v0[:, :, first]).abs().max() > 1e-4


def preimage(fsq, codes, eps=1e-3):
    """A pre-quantization z that the bound maps into the bin of each code.

    The bin centre, pulled 0.25 inside the range of tanh(.) * half_l: the official bound (1 - eps) cannot
    reach the centre of the outermost bins.
    """
    levels = fsq._levels.double()
    offset = torch.where(fsq._levels % 2 == 0, 0.5, 0.0).double()
    official = fsq.bound_mode == "official"
    half_l = (levels - 1) * ((1 - eps) if official else (1 + eps)) / 2
    target = codes * (fsq._levels // 2) + offset  # tanh(z + shift) * half_l at the bin centre
    target = target.clamp(-(half_l - 0.25), half_l - 0.25)
    shift = torch.tan(offset / half_l) if official else torch.atanh(offset / half_l)
    return torch.atanh(target / half_l) - shift


@pytest.mark.parametrize("bound", ["standard", "official"])
def test_fsq_round_trip_over_all_codes(bound):
    fsq = BoundedFSQ([8, 8, 8, 5, 5, 5], bound=bound)
    every = torch.arange(64000)
    codes = fsq._indices_to_codes(every)  # (64000, 6) in [-1, 1]
    assert codes.abs().max() <= 1 and len(torch.unique(codes, dim=0)) == 64000
    torch.testing.assert_close(fsq.codes_to_indices(codes).long(), every, rtol=0, atol=0)
    z = preimage(fsq, codes.double()).float().T.reshape(1, 6, 64000, 1, 1)  # channel-first "video"
    quantized, indices = fsq(z)
    torch.testing.assert_close(indices.flatten().long(), every, rtol=0, atol=0)
    torch.testing.assert_close(quantized.reshape(6, -1).T, codes, rtol=0, atol=0)


def test_official_bound_differs_from_standard_on_a_few_percent():
    z = torch.randn(1, 6, 64, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    _, official = BoundedFSQ([8, 8, 8, 5, 5, 5], bound="official")(z)
    _, standard = BoundedFSQ([8, 8, 8, 5, 5, 5], bound="standard")(z)
    changed = (official != standard).float().mean().item()
    assert 0.002 < changed < 0.1


@torch.no_grad()
def test_save_and_reload_round_trip(tmp_path):
    tok = tiny_tokenizer(norm_groups=4)
    path = save_model(tok, tmp_path / "tok.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.safetensors"]  # atomic write left no temporary
    again = load_model(path)
    assert isinstance(again, VideoTokenizer) and again.config == tok.config and not again.training
    via_public = load_magvit2(path, resolution=32)
    video = torch.rand(2, 3, 9, 32, 32)
    codes, indices = tok.encode(video)
    for other in (again, via_public):
        codes2, indices2 = other.encode(video)
        torch.testing.assert_close(indices2, indices, rtol=0, atol=0)
        torch.testing.assert_close(other.decode(codes2), tok.decode(codes), rtol=0, atol=0)


@torch.no_grad()
def test_forward_reconstructs_through_the_quantizer():
    tok = tiny_tokenizer()
    video = torch.rand(1, 3, 5, 16, 16)
    codes, indices = tok.encode(video)
    recon = tok(video)
    assert recon.shape == video.shape
    torch.testing.assert_close(recon, tok.decode_from_code_indices(indices))


def test_gradients_reach_the_encoder_through_the_straight_through_estimator():
    tok = tiny_tokenizer().train()
    tok(torch.rand(1, 3, 5, 16, 16)).square().mean().backward()
    assert tok.encoder_layers[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in tok.parameters())


# --- configs -----------------------------------------------------------------------------------------

def test_presets_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("num_res_blocks: 2\nchannels: [32, 64, 64, 128]\n")
    cfg = build_config(TokenizerConfig, "tiny", [recipe], ["fsq_bound=official"])
    assert (cfg.num_res_blocks, cfg.channels, cfg.fsq_bound, cfg.norm_groups) == (2, [32, 64, 64, 128], "official", 8)
    assert from_preset(TokenizerConfig, "nbp-magvit2").fsq_bound == "official"
    assert from_preset(TokenizerConfig, "magvit2").fsq_bound == "standard"


@pytest.mark.parametrize("preset, overrides, message", [
    ("nope", [], "unknown TokenizerConfig preset"),
    ("tiny", ["num_res_blocks=two"], "num_res_blocks"),
    ("tiny", ["widths=3"], "widths"),
    ("tiny", ["temporal_downsample=[true]"], "temporal_downsample needs 3 entries"),
    ("tiny", ["norm_groups=7"], "divisible by norm_groups"),
    ("tiny", ["fsq_bound=tan"], "fsq_bound"),
    ("tiny", ["temporal_kernel=2"], "temporal_kernel must be 1"),
    ("tiny", ["temporal_kernel=1"], "cannot downsample time"),
])
def test_invalid_configs_say_what_is_wrong(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TokenizerConfig, preset, overrides=overrides)


def test_per_frame_preset_encodes_every_frame_on_its_own():
    torch.manual_seed(0)
    tok = VideoTokenizer(from_preset(TokenizerConfig, "tiny-frames", resolution=32)).eval()
    video = torch.rand(1, 3, 6, 32, 32)
    with torch.no_grad():
        _, together = tok.encode(video)
        alone = torch.cat([tok.encode(video[:, :, t:t + 1])[1] for t in range(6)], dim=1)
        assert together.shape == (1, 6, 4, 4) and torch.equal(together, alone)
        recon = tok.decode_from_code_indices(together)
        torch.testing.assert_close(recon[:, :, 2:3], tok.decode_from_code_indices(together[:, 2:3]))
    assert all(m.conv.kernel_size[0] == 1 for m in tok.modules() if isinstance(m, CausalConv3d))


# --- bad input ----------------------------------------------------------------------------------------

def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_magvit2(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_magvit2(text)
    foreign = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {"transformer.tok_emb.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a MAGVITv2 tokenizer checkpoint"):
        load_magvit2(foreign)


def test_state_dict_that_does_not_fit_names_keys(tmp_path):
    tiny = tiny_tokenizer()
    state = dict(tiny.state_dict())
    del state["decoder_layers.0.conv.bias"]
    state["encoder_layers.99.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="1 missing keys \\(first: decoder_layers.0.conv.bias\\); "
                                              "1 unexpected keys \\(first: encoder_layers.99.weight\\)"):
        load_state_dict_strict(tiny, state, source="edited")


def test_official_loader_refuses_another_architecture(tmp_path):
    path = tmp_path / "magvit2_small.pt"
    torch.save({"model_state_dict": {"module." + k: v for k, v in tiny_tokenizer().state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="missing keys .* shape mismatches \\(first: encoder_layers.0.conv.weight: "
                                              "file \\(16, 3, 3, 3, 3\\) vs model \\(128, 3, 3, 3, 3\\)"):
        load_magvit2(path)


@pytest.mark.parametrize("shape, message", [
    ((3, 9, 32, 32), "must be a tensor \\(B, 3, T, H, W\\)"),
    ((1, 4, 9, 32, 32), "4 channels"),
    ((1, 3, 8, 32, 32), "8 frames; this tokenizer needs 1 \\+ 4k"),
    ((1, 3, 9, 30, 32), "30x32 must be divisible by 8"),
])
def test_bad_videos_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_tokenizer().encode(torch.rand(shape))


def test_out_of_range_video_warns():
    with pytest.warns(UserWarning, match="expects \\[0, 1\\]"):
        tiny_tokenizer().encode(torch.rand(1, 3, 1, 16, 16) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_tokenizer().encode(torch.rand(1, 3, 1, 16, 16))


@pytest.mark.parametrize("indices, message", [
    (torch.full((1, 2, 4, 4), 64000), "must lie in \\[0, 64000\\)"),
    (torch.full((1, 2, 4, 4), -1), "must lie in \\[0, 64000\\)"),
    (torch.zeros(1, 20, dtype=torch.long), "do not fill 4x4 latent frames"),
    (torch.zeros(1, 2, 3, dtype=torch.long), "must be \\(B, T', h, w\\)"),
    (torch.zeros(1, 16), "must be integers"),
])
def test_bad_indices_are_refused(indices, message):
    with pytest.raises(ValueError, match=message):
        tiny_tokenizer().decode_from_code_indices(indices)
