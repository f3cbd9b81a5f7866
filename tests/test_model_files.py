"""Model files that do not fit are one line naming the file and the fix (issue 32, item 8)."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nbp.checkpoint import CheckpointError, save_model
from nbp.checkpoint.zero import CONFIG_KEY, KIND_KEY
from nbp.config import from_preset
from nbp.download import load_far
from nbp.models.far import FAR, FARConfig


@pytest.fixture
def far_file(tmp_path):
    torch.manual_seed(0)
    return save_model(FAR(from_preset(FARConfig, "far-tiny")), tmp_path / "far.safetensors")


def test_a_truncated_safetensors_file_is_called_truncated(far_file):
    data = far_file.read_bytes()
    far_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated safetensors"):
        load_far(far_file)


def test_invalid_config_json_in_the_metadata_names_the_file(far_file, tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(far_file), bad, metadata={"format": "nbp", "kind": "far", "config": "{not json"})
    with pytest.raises(CheckpointError, match=f"{bad}: its metadata holds no valid model config"):
        load_far(bad)


def test_nan_weights_are_refused_naming_the_weight(far_file, tmp_path):
    state = load_file(far_file)
    key = sorted(state)[0]
    state[key][0] = float("nan")
    with safe_open(str(far_file), framework="pt") as f:
        metadata = f.metadata()
    save_file(state, tmp_path / "nan.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match=f"weight {key} holds NaN"):
        load_far(tmp_path / "nan.safetensors")


def test_a_training_checkpoint_given_as_a_model_points_to_the_export(far_file, tmp_path):
    model = FAR(from_preset(FARConfig, "far-tiny"))
    ckpt = tmp_path / "step_00000010.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                CONFIG_KEY: {"num_layers": 2}, KIND_KEY: "far"}, ckpt)
    with pytest.raises(CheckpointError, match="training checkpoint of an nbp run.*nbp convert"):
        load_far(ckpt)
