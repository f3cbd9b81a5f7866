"""Torch files from anywhere run no code: every loader and every command that reads one refuses a hostile pickle
(whose unpickling would create a file), naming what it holds and the opt-in; official files load without it."""
import json
from argparse import Namespace

import numpy as np
import pytest
import torch

from nbp.checkpoint import CheckpointError, convert, load_dcae, load_far, load_magvit2, load_transformer, read_torch_checkpoint
from nbp.checkpoint.perceptual import PerceptualConfig, load_perceptual
from nbp.cli import main
from nbp.data.tokens import write_token_dataset
from nbp.metrics import load_i3d

from conftest import det_state_dict, golden_dir


class Hostile:
    """Unpickling this opens (creates) `path`: code run by merely loading the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def official_lm(path, extra=None):
    spec = json.loads((golden_dir() / "nbp_gpt_small_spec.json").read_text())["uncond_spec"]
    state = {"transformer." + k: v for k, v in det_state_dict(spec, 13).items()}
    args = Namespace(n_layer=2, n_head=4, n_embd=64, token_number_per_step=16, cond_token_num=0, hybrid=False,
                     starts_with_bov=False, cond_stage_key="video", unconditional=True)
    torch.save({"state_dict": state, "hyper_parameters": {"args": args}, **(extra or {})}, path)
    return path


@pytest.fixture()
def hostile(tmp_path):
    marker = tmp_path / "pwned"
    path = official_lm(tmp_path / "hostile.ckpt", {"callbacks": Hostile(marker)})
    return path, marker


def test_every_loader_refuses_a_hostile_pickle(hostile, tmp_path):
    path, marker = hostile
    loaders = [read_torch_checkpoint, load_magvit2, load_transformer, load_i3d, load_far, load_dcae,
               lambda p: convert(p, tmp_path / "out.safetensors"),
               lambda p: load_perceptual(PerceptualConfig(vgg=str(p), lpips=str(p)))]
    for load in loaders:
        with pytest.raises(CheckpointError, match="holds io.open, which unpickling.*trust=True.*--trust-checkpoints"):
            load(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["convert", "{path}", "{tmp}/out.safetensors"],
    ["sample", "lm={path}", "tokenizer={path}"],
    ["eval-tokenizer", "tokenizer={path}", "clips.root={tmp}"],
    ["eval", "real={tmp}/r.npy", "fake={tmp}/f.npy", "i3d={path}"],
    ["predict-eval", "lm={path}", "tokenizer={path}", "clips.root={tmp}"],
])
def test_no_command_runs_code_from_a_torch_file(hostile, tmp_path, command, capsys):
    path, marker = hostile
    argv = [arg.format(path=path, tmp=tmp_path) for arg in command]
    assert main(argv) == 2
    assert "holds io.open" in capsys.readouterr().err and not marker.exists()


def test_a_hostile_checkpoint_in_a_run_folder_is_not_resumed(hostile, tmp_path, capsys):
    path, marker = hostile
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    path.rename(run / "step_00000002.ckpt")
    meta = {"vocab_size": 64000, "latent_shape": [3, 4, 4], "classes": []}
    codes = lambda clips: (np.zeros((len(clips), 48), np.uint16), np.zeros(len(clips), np.int32), [""] * len(clips))
    write_token_dataset(tmp_path / "tokens", meta, 8, 8, codes)
    code = main(["train-lm", f"run.run_dir={tmp_path / 'run'}", f"train={tmp_path / 'tokens'}",
                 "model.latent_shape=[3,4,4]", "run.steps=4", "batch_size=2"])
    assert code == 2 and "holds io.open" in capsys.readouterr().err and not marker.exists()


def test_official_files_load_without_the_opt_in_and_the_opt_in_unpickles(hostile, tmp_path):
    plain = load_transformer(official_lm(tmp_path / "official.ckpt"))  # an argparse.Namespace inside
    path, marker = hostile
    trusted = load_transformer(path, trust=True)
    assert marker.exists()  # the opt-in does unpickle in full
    for (name, a), b in zip(plain.state_dict().items(), trusted.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    marker.unlink()
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), "--trust-checkpoints"]) == 2
    assert marker.exists()  # read in full, then refused as not an nbp training run


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_plain_hostile_pickle_is_refused_naming_its_global_without_a_protocol_warning(tmp_path, protocol):
    import pickle
    import warnings
    marker, path = tmp_path / "pwned", tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"state_dict": {"w": 1}, "callbacks": Hostile(marker)}, protocol=protocol))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match="plain.pt holds io.open, which unpickling"):
            read_torch_checkpoint(path)
    assert not marker.exists()
