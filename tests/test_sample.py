import json

import numpy as np
import torch

from nbp.checkpoint import save_model
from nbp.cli import main
from nbp.config import from_preset
from nbp.data import write_video
from nbp.data.synthetic import render
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.models.transformer import Transformer, TransformerConfig

CLASSES = dict(condition="class", num_classes=4, cond_len=1)


def test_sample_command_writes_videos_and_continues_a_context(tmp_path):
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)).eval()
    lm = Transformer(from_preset(TransformerConfig, "tiny", latent_shape=[3, 4, 4], **CLASSES)).eval()
    save_model(tokenizer, tmp_path / "tok.safetensors")
    save_model(lm, tmp_path / "lm.safetensors")
    base = [f"lm={tmp_path / 'lm.safetensors'}", f"tokenizer={tmp_path / 'tok.safetensors'}", "frames=9",
            "resolution=32", "sampling.top_k=50", "seed=3"]
    assert main(["sample", *base, f"out={tmp_path / 'a'}", "num_samples=3", "batch_size=2", "class_ids=[0,2]"]) == 0
    videos = np.load(tmp_path / "a" / "samples_uint8.npy")
    assert videos.shape == (3, 9, 32, 32, 3) and videos.dtype == np.uint8
    assert json.loads((tmp_path / "a" / "samples.json").read_text())["settings"]["class_ids"] == [0, 2]
    assert all((tmp_path / "a" / name).stat().st_size > 0 for name in ("sample_0000.mp4", "grid.mp4", "contact_sheet.png"))
    assert main(["sample", *base, f"out={tmp_path / 'b'}", "num_samples=3", "batch_size=2", "class_ids=[0,2]"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "samples_uint8.npy"), videos)  # seeded

    clip = render("CircleMovingRight", 9, 32, np.random.default_rng(0))
    write_video(tmp_path / "context.mp4", clip, fps=8, lossless=True)
    assert main(["sample", *base, f"out={tmp_path / 'c'}", "num_samples=1", "class_ids=[1]",
                 f"context=[{tmp_path / 'context.mp4'}]", "context_frames=5"]) == 0
    continued = np.load(tmp_path / "c" / "samples_uint8.npy")[0]
    with torch.no_grad():  # a causal decoder: the first 5 frames depend only on the 2 given latent frames
        _, ids = tokenizer.encode(torch.from_numpy(clip[:5]).permute(3, 0, 1, 2)[None].float() / 255)
        given = tokenizer.decode_from_code_indices(ids).clamp(0, 1)
    expected = (given[0].permute(1, 2, 3, 0) * 255).round().byte().numpy()
    np.testing.assert_array_equal(continued[:5], expected)


def test_sharded_sampling_is_split_over_ranks_and_resumable(tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_model(VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)).eval(), tmp_path / "tok.safetensors")
    lm = Transformer(from_preset(TransformerConfig, "tiny", latent_shape=[3, 4, 4], **CLASSES)).eval()
    save_model(lm, tmp_path / "lm.safetensors")
    args = ["sample", f"lm={tmp_path / 'lm.safetensors'}", f"tokenizer={tmp_path / 'tok.safetensors'}", "frames=9",
            "resolution=32", f"out={tmp_path / 'run'}", "num_samples=5", "batch_size=2", "class_ids=[0,1,2,3]",
            "sharded=true", "sampling.top_k=50"]
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(args) == 0
    files = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert files == [f"{i:06d}.npy" for i in range(5)]
    first, lost = (np.load(tmp_path / "run" / "samples" / f"{i:06d}.npy") for i in (0, 3))
    (tmp_path / "run" / "samples" / "000003.npy").unlink()  # an interrupted rank 1
    assert main(args) == 0  # rank 1 again: only its batch with the missing sample
    assert len(list((tmp_path / "run" / "samples").iterdir())) == 5
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "samples" / "000000.npy"), first)
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "samples" / "000003.npy"), lost)  # drawn again alike
    assert not np.array_equal(lost, np.load(tmp_path / "run" / "samples" / "000001.npy"))

    from nbp.data.synthetic import make_dataset
    root = make_dataset(tmp_path / "synth", videos_per_class=2, size=32, seed=1)
    assert main(["export-clips", f"clips.root={root}", "clips.annotations=trainlist.txt", f"out={tmp_path / 'real.npy'}",
                 "count=10", "clips.frames=9", "clips.resolution=32"]) == 0
    real = np.load(tmp_path / "real.npy")
    assert real.shape == (10, 9, 32, 32, 3) and real.dtype == np.uint8
