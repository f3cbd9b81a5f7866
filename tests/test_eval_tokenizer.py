import json

import numpy as np
import torch

from nbp.checkpoint import save_model
from nbp.cli import main
from nbp.config import from_preset
from nbp.data import VideoDataset
from nbp.data.synthetic import make_dataset
from nbp.eval.tokenizer import codebook_usage
from nbp.metrics import psnr, ssim
from nbp.metrics.i3d import InceptionI3d
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer

from conftest import det_state_dict


def test_codebook_usage_counts_and_entropy():
    counts = np.zeros(64000, np.int64)
    counts[:4] = 5  # four codes, equally often
    usage = codebook_usage(counts)
    assert usage["codes_used"] == 4 and usage["usage"] == 4 / 64000
    assert usage["entropy_bits"] == 2.0 and usage["perplexity"] == 4.0


def test_eval_tokenizer_command_reports_metrics_and_writes_samples(tmp_path):
    root = make_dataset(tmp_path / "synth", videos_per_class=2, size=32, seed=4)
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)).eval()
    save_model(tokenizer, tmp_path / "tok.safetensors")
    i3d = InceptionI3d(400)
    torch.save(det_state_dict([(k, list(v.shape)) for k, v in i3d.state_dict().items()], 3, 2.0), tmp_path / "i3d.pt")
    out = tmp_path / "eval"
    assert main(["eval-tokenizer", f"tokenizer={tmp_path / 'tok.safetensors'}", f"clips.root={root}", f"out={out}",
                 "clips.frames=9", "clips.resolution=32", "num_workers=0", f"i3d={tmp_path / 'i3d.pt'}",
                 f"perceptual.search=[{tmp_path}]", "samples=3"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    clips = VideoDataset(root, sequence_length=9, resolution=32, sampling="centre")
    assert results["clips"] == len(clips) == 8
    with torch.no_grad():
        videos = torch.stack([clips[i]["video"] for i in range(len(clips))])
        codes, ids = tokenizer.encode(videos)
        recon = tokenizer.decode(codes).clamp(0, 1)
    np.testing.assert_allclose(results["psnr"], psnr(recon, videos).mean().item(), rtol=1e-5)
    mean_frame = videos.mean(2, keepdim=True).expand_as(videos)
    np.testing.assert_allclose(results["baseline_mean_frame_psnr"], psnr(mean_frame, videos).mean().item(), rtol=1e-5)
    assert results["baseline_mean_colour_psnr"] < results["baseline_mean_frame_psnr"]
    assert results["codes_used"] == len(torch.unique(ids))
    np.testing.assert_allclose(results["ssim"], ssim(recon, videos).mean().item(), rtol=1e-5)
    assert results["rfvd"] > 0 and "8 clips" in results["rfvd_protocol"] and "lpips" not in results
    assert (out / "reconstructions.png").stat().st_size > 0 and (out / "reconstructions.mp4").stat().st_size > 0
