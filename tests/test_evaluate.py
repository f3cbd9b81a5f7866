import json

import numpy as np
import pytest
import torch

from nbp.cli import main
from nbp.config import ConfigError
from nbp.data import write_video
from nbp.eval.fvd import PROTOCOLS, check_protocol, load_videos
from nbp.metrics import frechet_distance, i3d_features, load_i3d
from nbp.metrics.i3d import InceptionI3d

from conftest import det_state_dict


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "i3d.pt"
    spec = [(k, list(v.shape)) for k, v in InceptionI3d(400).state_dict().items()]
    torch.save(det_state_dict(spec, 3, 2.0), path)
    return path


def test_eval_command_computes_fvd_of_two_sets(tmp_path, i3d_file):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (3, 16, 32, 32, 3), dtype=np.uint8)
    fake = rng.integers(0, 255, (3, 16, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "real.npy", real)
    (tmp_path / "fake").mkdir()
    for i, video in enumerate(fake):
        write_video(tmp_path / "fake" / f"{i}.mp4", video, fps=8, lossless=True)
    assert main(["eval", f"real={tmp_path / 'real.npy'}", f"fake={tmp_path / 'fake'}", f"i3d={i3d_file}",
                 f"out={tmp_path / 'out'}", f"cache_real={tmp_path / 'real_feats.npz'}"]) == 0
    result = json.loads((tmp_path / "out" / "fvd.json").read_text())
    np.testing.assert_array_equal(load_videos(tmp_path / "fake"), fake)  # lossless files read back exactly
    i3d = load_i3d(i3d_file)
    expected = frechet_distance(i3d_features(i3d, real, progress=False), i3d_features(i3d, fake, progress=False))
    assert result["protocol"] == "custom" and result["fvd"] == pytest.approx(expected, rel=1e-6)
    assert main(["eval", f"real={tmp_path / 'real_feats.npz'}", f"fake={tmp_path / 'fake'}", f"i3d={i3d_file}",
                 f"out={tmp_path / 'out2'}"]) == 0  # cached real features
    assert json.loads((tmp_path / "out2" / "fvd.json").read_text())["fvd"] == pytest.approx(expected, rel=1e-6)


def test_protocols_refuse_sets_that_do_not_match():
    videos = np.zeros((5, 17, 64, 64, 3), np.uint8)
    assert check_protocol(PROTOCOLS["k600-prediction"], "fake", videos).shape == (5, 16, 64, 64, 3)
    with pytest.raises(ConfigError, match="compares 10000 videos per set; fake has 5"):
        check_protocol(PROTOCOLS["ucf101-10k"], "fake", videos)
    with pytest.raises(ConfigError, match="evaluates 64x64; real is 32x32"):
        check_protocol(PROTOCOLS["k600-prediction"], "real", np.zeros((2, 16, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="evaluates 16 frames; real videos have 9"):
        check_protocol(PROTOCOLS["custom"], "real", np.zeros((2, 9, 32, 32, 3), np.uint8))


def test_sets_of_mixed_shapes_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((16, 32, 32, 3), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((16, 48, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        load_videos(tmp_path)
