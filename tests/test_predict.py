from types import SimpleNamespace

import pytest

from nbp.config import ConfigError
from nbp.eval.prediction import PredictEvalConfig, condition, evaluate_prediction
from nbp.pipelines.tokens import given_codes


def test_given_codes_cover_the_context_frames():
    per_frame, causal_3d = SimpleNamespace(temporal_factor=1), SimpleNamespace(temporal_factor=4)
    assert given_codes(per_frame, 5, 64) == 5 * 64
    assert given_codes(causal_3d, 5, 256) == 2 * 256  # frames 0 and 1-4: two latent frames
    assert given_codes(causal_3d, 1, 256) == 256


def test_the_condition_follows_the_model():
    classes = ["ApplyEyeMakeup", "Basketball"]
    lm = lambda kind: SimpleNamespace(config=SimpleNamespace(condition=kind))
    assert condition(lm("class"), [1, 0], classes) == {"class_ids": [1, 0]}
    assert condition(lm("text"), [1], classes) == {"text": ["basketball"]}
    assert condition(lm("none"), [1], classes) == {}


@pytest.mark.parametrize("context_frames", [0, 9])
def test_context_outside_the_clip_is_refused(context_frames):
    with pytest.raises(ConfigError, match="context_frames"):
        evaluate_prediction(PredictEvalConfig(lm="x", tokenizer="y", context_frames=context_frames))


def test_atomic_writes_get_the_permissions_of_any_new_file(tmp_path):
    import os
    from pathlib import Path

    from nbp.io import atomic_write

    atomic_write(tmp_path / "metrics.json", lambda tmp: Path(tmp).write_text("{}"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "metrics.json").read_text() == "{}"
