import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nbp.checkpoint import save_model
from nbp.config import ConfigError, build_config, from_preset
from nbp.data.dataset import ClipConfig
from nbp.data.extract import TokenizeConfig, tokenize
from nbp.data.synthetic import make_dataset
from nbp.download import load_transformer
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.training.lm import LMTrainConfig, train_lm
from nbp.training.loggers import read_metrics
from nbp.training.system import warmup_cosine as lr_factor

from test_tokenizer_training import KillAt


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """A token dataset of the built-in videos through a tiny (untrained) tokenizer: latent 3x4x4."""
    folder = tmp_path_factory.mktemp("lm")
    root = make_dataset(folder / "synth", videos_per_class=4, size=32, seed=7)
    torch.manual_seed(0)
    save_model(VideoTokenizer(from_preset(TokenizerConfig, "tiny", resolution=32)), folder / "tok.safetensors")
    clips = ClipConfig(root=str(root), annotations="trainlist.txt", frames=9, resolution=32)
    tokenize(TokenizeConfig(tokenizer=str(folder / "tok.safetensors"), out=str(folder / "train"), clips=clips,
                            num_workers=0))
    return folder / "train"


MODEL = ["model.latent_shape=[3,4,4]", "model.condition=class", "model.num_classes=4", "model.cond_len=1"]


def config(tokens, run_dir, *overrides):
    return build_config(LMTrainConfig, overrides=[
        f"run.run_dir={run_dir}", f"train={tokens}", "run.steps=8", "batch_size=4", "run.checkpoint_every=4",
        "run.log_every=1", "warmup_steps=2", "lr=3e-3", "cond_dropout=0", *MODEL, *overrides])


def final_weights(path):
    return load_transformer(path).state_dict()


def test_lm_learns_and_resumes_exactly(tokens, tmp_path):
    straight = train_lm(config(tokens, tmp_path / "a", "run.steps=12", "cond_dropout=0.2"))
    rows = [r for r in read_metrics(tmp_path / "a") if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    first, last = ((float(r["train/acc1"]), float(r["train/acc5"])) for r in (rows[0], rows[-1]))
    assert last[1] >= last[0] and last[1] > first[1] + 0.05  # top-5 holds top-1, and accuracy rose
    with pytest.raises(RuntimeError, match="killed"):
        train_lm(config(tokens, tmp_path / "b", "run.steps=12", "cond_dropout=0.2"), callbacks=[KillAt(10)])
    resumed = train_lm(config(tokens, tmp_path / "b", "run.steps=12", "cond_dropout=0.2"))  # from batch 8
    resumed_losses = [float(r["train/loss"]) for r in read_metrics(tmp_path / "b") if r.get("train/loss")]
    assert resumed_losses[-4:] == losses[-4:]  # the same loss curve after the restart
    for (name, a), b in zip(final_weights(straight).items(), final_weights(resumed).values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_lr_schedule_and_weight_decay_groups(tokens, tmp_path):
    assert lr_factor(0, 10, 100, 0.1) == 0.1 and lr_factor(9, 10, 100, 0.1) == 1.0
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1) and lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    from nbp.models.transformer import Transformer, TransformerConfig
    from nbp.training.lm import LMSystem, decay_groups

    system = LMSystem(config(tokens, tmp_path / "c"))
    decay, rest = decay_groups(system.model, 0.05)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in rest["params"])
    assert rest["weight_decay"] == 0.0 and len(rest["params"]) == 2 * 2 + 1  # two norms per layer, final norm
    official = Transformer(from_preset(TransformerConfig, "nbp-gpt-700m", n_layer=1, n_embd=64, n_head=4))
    decay, rest = decay_groups(official, 0.05)
    assert any(p is official.pos_emb for p in rest["params"]) and not any(p is official.pos_emb for p in decay["params"])
    assert any(p is official.tok_emb.weight for p in decay["params"])
    assert len(decay["params"]) == 1 + 4 + 2 + 1  # token embedding, q k v proj, two MLP matrices, head


def test_resuming_with_another_model_size_fails_clearly(tokens, tmp_path):
    train_lm(config(tokens, tmp_path / "r", "run.steps=2", "run.checkpoint_every=2"))
    with pytest.raises(ConfigError, match="of another model \\(n_layer: checkpoint 2 vs run 3"):
        train_lm(config(tokens, tmp_path / "r", "run.steps=4", "model.n_layer=3"))


def test_mismatched_dataset_fails_before_step_zero(tokens, tmp_path):
    with pytest.raises(ConfigError, match="latent \\[3, 4, 4\\] and vocabulary 64000; the model expects latent \\[3, 4, 8\\]"):
        train_lm(config(tokens, tmp_path / "d", "model.latent_shape=[3,4,8]"))
    assert not (tmp_path / "d" / "checkpoints").exists()


def run_cli(*args, timeout=600):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "nbp.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_on_two_cpu_processes_matches_single_process(tokens, tmp_path, stage):
    common = [f"train={tokens}", "run.steps=4", "run.checkpoint_every=4", "warmup_steps=1", "lr=3e-3",
              "cond_dropout=0", *MODEL, "grad_clip=0"]
    single = tmp_path / "single"
    run_cli("train-lm", *common, f"run.run_dir={single}", "batch_size=4")
    zero = tmp_path / f"zero{stage}"
    run_cli("train-lm", *common, f"run.run_dir={zero}", "batch_size=2", "run.devices=2",
            f"run.strategy=deepspeed_stage_{stage}")
    checkpoint = zero / "checkpoints" / "step_00000004.ckpt"
    assert checkpoint.is_dir()  # a ZeRO checkpoint folder
    converted = tmp_path / "zero_fp32.safetensors"
    done = subprocess.run([sys.executable, "zero_to_fp32.py", str(checkpoint), str(converted)], capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr[-2000:]
    expected, got = final_weights(single / "lm.safetensors"), final_weights(converted)
    for name, value in expected.items():
        # 4 Adam steps of lr 3e-3 from gradients summed in another order: on the Intel AMX machine one weight in
        # 4,096 ended 1.3e-5 off (1/200 of a step)
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=3e-5, msg=name)
    torch.testing.assert_close(final_weights(zero / "lm.safetensors")["head.weight"], got["head.weight"])


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_stop_request_saves_then_the_run_resumes(tokens, tmp_path, stop):
    """SIGTERM (a scheduler) and a first Ctrl-C finish the batch, save, and exit 3: stopped, resumable, unfinished."""
    import signal
    import time

    args = [sys.executable, "-m", "nbp.cli", "train-lm", f"train={tokens}", f"run.run_dir={tmp_path / 'run'}",
            "run.steps=400", "run.checkpoint_every=1000", "batch_size=4", *MODEL]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "run" / "logs").glob("version_0")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(4)  # some batches
    process.send_signal(getattr(signal, stop))
    _, err = process.communicate(timeout=120)
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step_*.ckpt"))
    assert len(saved) == 1 and "stop requested: saving batch" in err, err[-2000:]
    assert process.returncode == 3 and "run the same command again to resume" in err
    assert not (tmp_path / "run" / "lm.safetensors").exists()
    stopped_at = int(saved[0].name[5:13])
    assert 0 < stopped_at < 400
    run_cli("train-lm", f"train={tokens}", f"run.run_dir={tmp_path / 'run'}", f"run.steps={stopped_at + 2}",
            "run.checkpoint_every=1000", "batch_size=4", *MODEL)
    assert (tmp_path / "run" / "checkpoints" / f"step_{stopped_at + 2:08d}.ckpt").exists()


def test_out_of_memory_names_the_settings_to_lower(tokens, tmp_path):
    from nbp.training.lm import LMSystem

    system = LMSystem(config(tokens, tmp_path / "oom"))

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    system.model.forward = exhausted
    batch = {"tokens": torch.zeros(4, 48, dtype=torch.long), "label": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(RuntimeError, match="out of memory at batch 0 \\(batch_size=4, 48 tokens.*lower batch_size and raise accumulate"):
        system.training_step(batch, 0)


def test_two_runs_on_one_folder_are_refused(tokens, tmp_path):
    from nbp.config import UserError
    from nbp.training.run_folder import locked

    with locked(tmp_path / "busy"), pytest.raises(UserError, match="is in use by another run"):
        train_lm(config(tokens, tmp_path / "busy", "run.steps=2"))
    assert not (tmp_path / "busy" / "checkpoints").exists()


@pytest.mark.parametrize("damage", ["truncated", "zeros", "empty"])
def test_a_broken_newest_checkpoint_is_set_aside_and_the_one_before_resumed(tokens, tmp_path, damage, caplog):
    straight = train_lm(config(tokens, tmp_path / "a", "run.steps=12"))
    with pytest.raises(RuntimeError, match="killed"):  # checkpoints at 4 and 8
        train_lm(config(tokens, tmp_path / "b", "run.steps=12"), callbacks=[KillAt(10)])
    newest = tmp_path / "b" / "checkpoints" / "step_00000008.ckpt"
    data = newest.read_bytes()
    newest.write_bytes({"truncated": data[: len(data) // 2], "zeros": bytes(len(data)), "empty": b""}[damage])
    (tmp_path / "b" / "checkpoints" / ".step_00000009.ckpt.tmp").write_bytes(b"half a save")
    resumed = train_lm(config(tokens, tmp_path / "b", "run.steps=12"))  # from batch 4
    assert "step_00000008.ckpt is incomplete or corrupt: set aside as step_00000008.ckpt.broken" in caplog.text
    assert (tmp_path / "b" / "checkpoints" / "step_00000008.ckpt.broken").exists()
    assert not list((tmp_path / "b" / "checkpoints").glob(".step_*.tmp"))
    for (name, a), b in zip(final_weights(straight).items(), final_weights(resumed).values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_a_full_disk_while_checkpointing_keeps_the_earlier_ones(tokens, tmp_path, monkeypatch):
    import errno

    import lightning as L

    from nbp.config import UserError

    train_lm(config(tokens, tmp_path / "d", "run.steps=4"))
    save = L.Trainer.save_checkpoint

    def full_disk(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)
        with open(path, "ab") as f:
            f.truncate(100)  # half written when the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(L.Trainer, "save_checkpoint", full_disk)
    with pytest.raises(UserError, match="could not write checkpoint step_00000008.ckpt .*No space left.*intact"):
        train_lm(config(tokens, tmp_path / "d", "run.steps=8"))
    names = sorted(p.name for p in (tmp_path / "d" / "checkpoints").iterdir())
    assert names == ["step_00000004.ckpt"]


def test_a_resume_with_changed_settings_names_them(tokens, tmp_path, caplog):
    train_lm(config(tokens, tmp_path / "s", "run.steps=4"))
    train_lm(config(tokens, tmp_path / "s", "run.steps=8", "lr=1e-3"))
    assert "settings changed since it began" in caplog.text and "lr: 0.003 -> 0.001" in caplog.text
    assert "run.steps: 4 -> 8" in caplog.text


def test_bf16_mixed_clips_the_gradients_of_fused_adamw():
    """Lightning refuses to clip a fused optimizer's gradients under any mixed precision (an fp16 scaler rule);
    bf16 has no scaler, so nbp's plugin clips them as they are."""
    from nbp.training.runner import BF16Mixed, RunConfig

    weight = torch.nn.Parameter(torch.ones(10))
    optimizer = torch.optim.AdamW([weight], fused=True)
    weight.grad = torch.full((10,), 3.0)
    BF16Mixed("bf16-mixed", "cpu").clip_gradients(optimizer, clip_val=1.0)
    assert weight.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    settings = RunConfig(precision="bf16-mixed", accelerator="cpu").precision_settings()
    assert settings == {"precision": "32-true"} or isinstance(settings["plugins"][0], BF16Mixed)  # where emulated


def test_a_bf16_mixed_run_with_gradient_clipping_trains(tokens, tmp_path):
    train_lm(config(tokens, tmp_path / "bf16", "run.steps=3", "run.precision=bf16-mixed", "grad_clip=1.0"))
    losses = [float(r["train/loss"]) for r in read_metrics(tmp_path / "bf16") if r.get("train/loss")]
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_checkpoints_are_written_beside_their_destination_not_in_tmpdir(tokens, tmp_path, monkeypatch):
    """With no room in $TMPDIR (here: no such folder) the run still checkpoints into its own folder; files a killed
    save or export left there are removed when the run starts again."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_tmp"))
    (tmp_path / "t" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t" / "checkpoints" / ".step_00000002.ckpt.tmp").write_bytes(b"half")
    (tmp_path / "t" / ".lm.safetensors.abc123.tmp").write_bytes(b"half")
    train_lm(config(tokens, tmp_path / "t", "run.steps=4"))
    assert sorted(p.name for p in (tmp_path / "t" / "checkpoints").iterdir()) == ["step_00000004.ckpt"]
    assert not list((tmp_path / "t").glob(".*.tmp"))


def test_a_checkpoint_damaged_inside_is_set_aside_and_the_one_before_resumed(tokens, tmp_path, caplog):
    """Overwritten bytes mid-file leave the zip's end record intact: the CRC check finds them."""
    import logging

    train_lm(config(tokens, tmp_path / "z", "run.steps=8", "run.keep_last=2"))
    newest = tmp_path / "z" / "checkpoints" / "step_00000008.ckpt"
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    assert data[middle:middle + 65536] != b"\xab" * 65536
    data[middle:middle + 65536] = b"\xab" * 65536  # (not zeros: this stretch may hold zeros, an optimizer's state)
    newest.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="nbp"):
        train_lm(config(tokens, tmp_path / "z", "run.steps=12", "run.keep_last=2"))
    assert "step_00000008.ckpt is incomplete or corrupt" in caplog.text and "resuming from step_00000004.ckpt" in caplog.text
    assert (tmp_path / "z" / "checkpoints" / "step_00000008.ckpt.broken").is_file()
