import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from nbp.checkpoint import CheckpointError
from nbp.checkpoint.perceptual import PerceptualConfig, load_perceptual
from nbp.config import ConfigError
from nbp.metrics import (
    MIN_FRAMES,
    InceptionI3d,
    TorchScriptI3D,
    best_of_n,
    frechet_distance,
    frechet_distance_from_stats,
    i3d_features,
    load_features,
    load_i3d,
    per_frame_psnr,
    per_frame_ssim,
    preprocess,
    psnr,
    save_features,
    ssim,
)
from nbp.metrics.video import UINT8_PSNR

from conftest import det_state_dict, golden_dir

# --- I3D: official checkpoint and golden features ------------------------------------------------

@pytest.fixture(scope="module")
def i3d_spec():
    return json.loads((golden_dir() / "i3d_videogpt_spec.json").read_text())


@pytest.fixture(scope="module")
def i3d_state(i3d_spec):
    return det_state_dict(i3d_spec, 3, gain=2.0)


@pytest.fixture(scope="module")
def official_i3d(i3d_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    torch.save(i3d_state, path)  # the format of VideoGPT's file: a plain state dict
    return load_i3d(path)


def test_i3d_architecture_matches_spec(i3d_spec):
    model = InceptionI3d()
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [(k, s) for k, s in i3d_spec]


@torch.no_grad()
def test_i3d_reproduces_golden_features(official_i3d, golden):
    g = golden("i3d_small.npz")
    for name in ("real", "fake"):
        feats = i3d_features(official_i3d, g[name], batch_size=4, progress=False)
        ref = g[f"feat_{name}"].astype(np.float64)
        assert feats.shape == (4, 400) and feats.dtype == np.float64
        # Relative error of each video's 400-d feature vector, against that vector's norm.
        rel = np.linalg.norm(feats - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert rel.max() < 1e-4, f"{name}: relative feature error {rel.max():.2e}"


@torch.no_grad()
def test_i3d_minimum_frame_count(official_i3d):
    # 9 frames is the fewest the network takes (ceil(T/8) >= 2 for the final (2,7,7) average pool).
    video = np.random.default_rng(0).integers(0, 256, size=(1, MIN_FRAMES, 16, 16, 3), dtype=np.uint8)
    assert MIN_FRAMES == 9
    feats = i3d_features(official_i3d, video, progress=False)
    assert feats.shape == (1, 400) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="8 frames; the I3D needs at least 9"):
        i3d_features(official_i3d, video[:, :8], progress=False)
    with pytest.raises(ValueError, match="at least 9 frames"):
        official_i3d(torch.zeros(1, 3, 8, 224, 224))


# --- loading errors ------------------------------------------------------------------------------

def test_load_i3d_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_i3d(tmp_path / "nope.pt")


def test_load_i3d_rejects_non_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_i3d(text)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_i3d(tensor)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 1}, wrapped)
    with pytest.raises(CheckpointError, match="not an I3D state dict"):
        load_i3d(wrapped)


def test_load_i3d_names_missing_unexpected_and_misshapen_keys(i3d_state, tmp_path):
    state = dict(i3d_state)
    del state["Mixed_5c.b3b.conv3d.weight"]
    state["extra.weight"] = torch.zeros(2)
    state["logits.conv3d.bias"] = torch.zeros(401)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_i3d(path)
    message = str(info.value)
    assert "1 missing keys (first: Mixed_5c.b3b.conv3d.weight)" in message
    assert "1 unexpected keys (first: extra.weight)" in message
    assert "logits.conv3d.bias: file (401,) vs model (400,)" in message


class ScriptedStandIn(nn.Module):
    """A TorchScript module with the calling convention of StyleGAN-V's `i3d_torchscript.pt`."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("called with the wrong flags")
        return self.proj(x.mean(dim=(2, 3, 4)))  # (N, 3, T, H, W) -> (N, 3) -> (N, 400)


@torch.no_grad()
def test_load_i3d_torchscript(tmp_path):
    torch.manual_seed(0)
    scripted = torch.jit.script(ScriptedStandIn().eval())
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(scripted, path)
    i3d = load_i3d(path)
    assert isinstance(i3d, TorchScriptI3D)
    videos = np.random.default_rng(1).integers(0, 256, size=(3, 10, 8, 12, 3), dtype=np.uint8)
    feats = i3d_features(i3d, videos, batch_size=2, progress=False)
    # What the stand-in computes on the preprocessed videos: per-channel means in [-1, 1], projected.
    x = preprocess(videos)
    expected = x.double().mean(dim=(2, 3, 4)) @ scripted.proj.weight.double().T + scripted.proj.bias.double()
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-6)


# --- preprocessing and input checks --------------------------------------------------------------

def bilinear_reference(frame: np.ndarray, size: int) -> np.ndarray:
    """align_corners=False bilinear resize of (H, W) by separable np.interp (which clamps at the edges)."""
    def axis_coords(n):
        return (np.arange(size) + 0.5) * n / size - 0.5
    h, w = frame.shape
    rows = np.stack([np.interp(axis_coords(w), np.arange(w), r) for r in frame.astype(np.float64)])  # (H, size)
    return np.stack([np.interp(axis_coords(h), np.arange(h), c) for c in rows.T], axis=1)  # (size, size)


def test_preprocess_resizes_bilinearly_and_scales():
    videos = np.random.default_rng(2).integers(0, 256, size=(2, 3, 5, 7, 3), dtype=np.uint8)
    x = preprocess(torch.from_numpy(videos))
    assert x.shape == (2, 3, 3, 224, 224) and x.dtype == torch.float32
    for n, t, c in [(0, 0, 0), (1, 2, 1), (1, 1, 2)]:
        expected = 2 * bilinear_reference(videos[n, t, :, :, c], 224) / 255 - 1
        np.testing.assert_allclose(x[n, c, t].numpy(), expected, atol=1e-5)
    extremes = preprocess(np.stack([np.zeros((1, 4, 4, 3), np.uint8), np.full((1, 4, 4, 3), 255, np.uint8)]))
    # bilinear weights sum to 1 within float rounding (which kernel, hence which rounding, depends on the threads)
    torch.testing.assert_close(extremes[0], torch.full_like(extremes[0], -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(extremes[1], torch.ones_like(extremes[1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("videos, error, match", [
    ([[1, 2]], TypeError, "numpy array or torch tensor"),
    (np.zeros((16, 32, 32, 3), np.uint8), ValueError, r"\(N, T, H, W, C\), got \(16, 32, 32, 3\) \(one video"),
    (np.zeros((2, 16, 32, 32, 3), np.float32), ValueError, "must be uint8 in \\[0, 255\\], got dtype float32"),
    (np.full((2, 16, 32, 32, 3), np.nan, np.float32), ValueError, "contain NaN"),
    (torch.zeros(2, 16, 32, 32, 3, dtype=torch.int64), ValueError, "must be uint8"),
    (np.zeros((2, 16, 3, 32, 32), np.uint8), ValueError, "3 \\(RGB\\) channels on the last axis"),
    (np.zeros((0, 16, 32, 32, 3), np.uint8), ValueError, "is empty"),
    (np.zeros((2, 16, 0, 32, 3), np.uint8), ValueError, "is empty"),
    (np.zeros((2, 4, 32, 32, 3), np.uint8), ValueError, "4 frames; the I3D needs at least 9"),
])
def test_i3d_features_rejects_bad_videos(videos, error, match):
    with pytest.raises(error, match=match):
        i3d_features(nn.Identity(), videos, progress=False)


def test_i3d_features_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        i3d_features(nn.Identity(), np.zeros((1, 9, 8, 8, 3), np.uint8), batch_size=0, progress=False)


# --- Fréchet distance ----------------------------------------------------------------------------

def gaussian_samples(rng, n, d, mean, scale):
    mixing = rng.normal(size=(d, d)) / np.sqrt(d) + np.diag(scale)  # a full, well-conditioned covariance
    return rng.normal(size=(n, d)) @ mixing.T + mean


def frechet_reference(a, b):
    """Independent float64 formula: tr sqrt(S_a S_b) = sum sqrt(eig(S_a^1/2 S_b S_a^1/2)) via eigh."""
    def stats(x):
        centred = x - x.mean(axis=0)
        return x.mean(axis=0), centred.T @ centred / (len(x) - 1)
    (mu_a, s_a), (mu_b, s_b) = stats(a), stats(b)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(w)) @ v.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt


def test_frechet_distance_matches_independent_formula():
    rng = np.random.default_rng(0)
    a = gaussian_samples(rng, 2000, 16, mean=0.0, scale=np.ones(16))
    b = gaussian_samples(rng, 2000, 16, mean=rng.normal(size=16) * 0.3, scale=rng.uniform(0.5, 2.0, 16))
    value = frechet_distance(a, b)
    assert value > 1.0
    assert value == pytest.approx(frechet_reference(a, b), rel=1e-9)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(value, rel=1e-5)


def test_frechet_distance_closed_form_for_gaussians():
    # N(0, I) vs N(mu, diag(s^2)): ||mu||^2 + sum (1 - s)^2; sample estimates agree to a few percent.
    rng = np.random.default_rng(1)
    mu, s = rng.normal(size=16) * 0.5, rng.uniform(0.5, 2.0, 16)
    a, b = rng.normal(size=(4000, 16)), rng.normal(size=(4000, 16)) * s + mu
    assert frechet_distance(a, b) == pytest.approx(mu @ mu + ((1 - s) ** 2).sum(), rel=0.05)


def test_frechet_distance_identical_and_shifted_sets():
    a = gaussian_samples(np.random.default_rng(3), 2000, 16, mean=1.0, scale=np.ones(16))
    assert abs(frechet_distance(a, a)) < 1e-6
    shift = np.linspace(-1, 1, 16)
    assert frechet_distance(a, a + shift) == pytest.approx(shift @ shift, abs=1e-6)


def test_frechet_distance_warns_on_few_samples():
    rng = np.random.default_rng(4)
    with pytest.warns(UserWarning, match="10 samples for 16 dimensions"):
        frechet_distance(rng.normal(size=(10, 16)), rng.normal(size=(100, 16)))


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((10, 4)), np.zeros((10, 5)), "differ in dimension"),
    (np.zeros(10), np.zeros((10, 4)), "num_samples >= 2, dim"),
    (np.zeros((1, 4)), np.zeros((10, 4)), "num_samples >= 2, dim"),
    (np.full((10, 4), np.nan), np.zeros((10, 4)), "NaN or infinite"),
])
def test_frechet_distance_rejects_bad_features(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_frechet_distance_from_stats_checks_shapes():
    with pytest.raises(ValueError, match="statistics do not match"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- feature cache -------------------------------------------------------------------------------

def test_feature_cache_round_trip(tmp_path):
    feats = np.random.default_rng(5).normal(size=(6, 400))
    meta = {"dataset": "ucf101", "split": "train", "count": 6, "resolution": 128, "frames": 16}
    path = save_features(tmp_path / "real.npz", feats, meta)
    loaded, loaded_meta = load_features(path, expect={"resolution": 128, "frames": 16})
    np.testing.assert_array_equal(loaded, feats)
    assert loaded_meta == meta
    with pytest.raises(ValueError, match=r"another protocol: resolution=128 \(expected 64\)"):
        load_features(path, expect={"resolution": 64})


def test_feature_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_features(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("not numpy")
    with pytest.raises(ValueError, match="not a feature file"):
        load_features(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="not a feature file"):
        load_features(other)
    with pytest.raises(TypeError):
        save_features(tmp_path / "bad.npz", np.zeros((2, 3)), {"when": object()})
    assert not (tmp_path / "bad.npz").exists()


# --- PSNR / SSIM ---------------------------------------------------------------------------------

def test_psnr_of_constant_offsets():
    a = torch.rand(2, 3, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8
    torch.testing.assert_close(psnr(a, a + 0.1), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(psnr(255 * a, 255 * a + 25.5, data_range=255.0), torch.full((2,), 20.0, dtype=torch.float64))
    offsets = torch.tensor([0.1, 0.01, 0.1, 0.01], dtype=torch.float64).view(1, 1, 4, 1, 1)  # per frame
    frames = per_frame_psnr(a, a + offsets)
    assert frames.shape == (2, 4)
    torch.testing.assert_close(frames, torch.tensor([[20.0, 40.0, 20.0, 40.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(psnr(a, a + offsets), torch.full((2,), 30.0, dtype=torch.float64))
    single = psnr(a[0].float(), a[0].float() + 0.1)
    assert single.shape == () and single.item() == pytest.approx(20.0, abs=1e-3)
    assert torch.isinf(psnr(a, a)).all()
    # capped at 8-bit rounding noise: one identical frame no longer makes the video's PSNR inf
    capped = per_frame_psnr(a, torch.cat([a[:, :, :1], a[:, :, 1:] + 0.1], 2), max_db=UINT8_PSNR)
    torch.testing.assert_close(capped[:, 0], torch.full((2,), 10 * math.log10(12 * 255**2), dtype=torch.float64))
    assert torch.allclose(capped[:, 1:], torch.tensor(20.0, dtype=torch.float64))


def ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """skimage's algorithm for one (H, W) channel: scipy Gaussian filter, population moments, crop 5."""
    blur = lambda z: ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_matches_reference_implementation():
    rng = np.random.default_rng(6)
    a = rng.uniform(size=(2, 3, 4, 17, 23))
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    b[1] = np.roll(b[1], 2, axis=-1)  # a structurally different second video
    for data_range in (1.0, 2.0):
        frames = per_frame_ssim(torch.from_numpy(a), torch.from_numpy(b), data_range=data_range)
        expected = np.array([[np.mean([ssim_reference(a[n, c, t], b[n, c, t], data_range) for c in range(3)])
                              for t in range(4)] for n in range(2)])
        assert frames.shape == (2, 4)
        np.testing.assert_allclose(frames.numpy(), expected, rtol=1e-10)
        np.testing.assert_allclose(ssim(torch.from_numpy(a), torch.from_numpy(b), data_range).numpy(),
                                   expected.mean(axis=1), rtol=1e-10)
    assert 0.1 < expected[0].mean() < 0.95 and expected[1].mean() < expected[0].mean()


def test_ssim_of_identical_frames_is_one():
    a = torch.rand(2, 3, 5, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ssim(a, a), torch.ones(2), atol=1e-6, rtol=0)
    assert ssim(a[0], a[0]).shape == () and per_frame_ssim(a[0], a[0]).shape == (5,)


def test_best_of_n():
    scores = torch.tensor([[20.0, 25.0, 22.0], [31.0, 30.0, 29.0]])  # (B=2 videos, N=3 samples)
    torch.testing.assert_close(best_of_n(scores), torch.tensor([25.0, 31.0]))
    per_frame = torch.tensor([[[1.0, 5.0], [3.0, 2.0]]])  # (B=1, N=2, T=2): per-frame maximum
    torch.testing.assert_close(best_of_n(per_frame), torch.tensor([[3.0, 5.0]]))
    with pytest.raises(ValueError, match=r"\(B, N, \.\.\.\)"):
        best_of_n(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        best_of_n(torch.tensor([[1.0, float("nan")]]))


@pytest.mark.parametrize("a, b, match", [
    (torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 2, 16, 17), "differ in shape"),
    (torch.zeros(3, 16, 16), torch.zeros(3, 16, 16), r"\(B, C, T, H, W\) or \(C, T, H, W\)"),
    (torch.zeros(1, 3, 2, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 2, 16, 16, dtype=torch.uint8), "must be float"),
    (torch.full((1, 3, 2, 16, 16), float("nan")), torch.zeros(1, 3, 2, 16, 16), "NaN"),
])
def test_video_metrics_reject_bad_inputs(a, b, match):
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=match):
            metric(a, b)


def test_video_metrics_reject_small_frames_and_bad_range():
    small = torch.zeros(1, 3, 2, 10, 16)
    with pytest.raises(ValueError, match="at least 11x11 pixels, got 10x16"):
        ssim(small, small)
    with pytest.raises(ValueError, match="data_range must be positive"):
        psnr(small, small, data_range=0)
    with pytest.raises(TypeError, match="torch tensors"):
        psnr(np.zeros((3, 2, 16, 16)), np.zeros((3, 2, 16, 16)))


ALEXNET_SHAPES = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
                  "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3)}  # torchvision's AlexNet


def alexnet_lpips_by_hand(backbone: dict, lin: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS-Alex written out from torchvision's layer table (strides, paddings, pools) and LPIPS's formula."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        conv = lambda x, name, **kw: F.relu(F.conv2d(x, backbone[f"{name}.weight"], backbone[f"{name}.bias"], **kw))
        x = (x - shift) / scale
        r1 = conv(x, "features.0", stride=4, padding=2)
        r2 = conv(F.max_pool2d(r1, 3, 2), "features.3", padding=2)
        r3 = conv(F.max_pool2d(r2, 3, 2), "features.6", padding=1)
        r4 = conv(r3, "features.8", padding=1)
        return [r1, r2, r3, r4, conv(r4, "features.10", padding=1)]

    unit = lambda x: x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10)
    return sum(F.conv2d((unit(fa) - unit(fb)).square(), lin[f"lin{i}.model.1.weight"]).mean(dim=(1, 2, 3))
               for i, (fa, fb) in enumerate(zip(taps(a), taps(b))))


def test_lpips_alexnet_loads_torchvision_and_lpips_files_and_computes_lpips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    backbone = {}
    for name, shape in ALEXNET_SHAPES.items():
        backbone[f"{name}.weight"] = torch.randn(shape, generator=generator) / (shape[1] * shape[2] * shape[3]) ** 0.5
        backbone[f"{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.1
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # torchvision's file also holds the classifier
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
           for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(backbone, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(lin, tmp_path / "alex.pth")
    lpips = load_perceptual(PerceptualConfig(net="alex", search=[str(tmp_path)]))
    a, b = (torch.rand(3, 3, 64, 64, generator=generator) * 2 - 1 for _ in range(2))
    torch.testing.assert_close(lpips(a, b), alexnet_lpips_by_hand(backbone, lin, a, b), rtol=1e-5, atol=1e-6)
    assert torch.equal(lpips(a, a), torch.zeros(3))
    with pytest.raises(ConfigError, match="perceptual.net"):
        load_perceptual(PerceptualConfig(net="squeeze"))


def test_perceptual_weights_are_found_where_torchvision_and_the_lpips_package_keep_them(tmp_path, monkeypatch):
    backbone = {f"{name}.{kind}": torch.zeros(shape if kind == "weight" else shape[:1])
                for name, shape in ALEXNET_SHAPES.items() for kind in ("weight", "bias")}
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    shipped = tmp_path / "site" / "lpips" / "weights" / "v0.1"
    hub.mkdir(parents=True)
    shipped.mkdir(parents=True)
    (shipped.parent.parent / "__init__.py").write_text("raise ImportError('not to be imported')\n")
    torch.save(backbone, hub / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
               shipped / "alex.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert load_perceptual(PerceptualConfig(net="alex", search=[str(tmp_path / "empty")])) is not None


def sqrtm_distance(a, b):
    """The official formula, through scipy's matrix square root (FVD's reference implementations)."""
    from scipy import linalg

    (mu_a, s_a), (mu_b, s_b) = ((x.mean(0), np.cov(x, rowvar=False)) for x in (a, b))
    return float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(s_a + s_b) - 2 * np.trace(linalg.sqrtm(s_a @ s_b).real))


def test_frechet_distance_of_small_large_magnitude_sets_is_the_eigenvalue_value():
    """16 + 16 videos of I3D-sized logits (400 dimensions, magnitudes ~1e3): singular covariances, where sqrtm's
    round-off put more than pytorch-fid's 1e-3 on the imaginary diagonal and the distance used to be refused."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(16, 400)) * 1e3 + rng.normal(size=400) * 1e3
    b = rng.normal(size=(16, 400)) * 1.5e3 + rng.normal(size=400) * 1e3
    with pytest.warns(UserWarning, match="16 samples for 400 dimensions"):
        value = frechet_distance(a, b)
    # reference: the eigenvalues of the (non-symmetric) product itself, by numpy's general solver
    (mu_a, s_a), (mu_b, s_b) = ((x.mean(0), np.cov(x, rowvar=False)) for x in (a, b))
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0, None)).sum()
    reference = (mu_a - mu_b) @ (mu_a - mu_b) + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt
    assert value == pytest.approx(reference, rel=1e-6)


def test_frechet_distance_equals_sqrtm_where_that_is_well_conditioned():
    rng = np.random.default_rng(6)
    a = gaussian_samples(rng, 3000, 24, mean=0.0, scale=rng.uniform(0.5, 2.0, 24))
    b = gaussian_samples(rng, 3000, 24, mean=rng.normal(size=24) * 0.3, scale=rng.uniform(0.5, 2.0, 24))
    assert frechet_distance(a, b) == pytest.approx(sqrtm_distance(a, b), rel=1e-9)
