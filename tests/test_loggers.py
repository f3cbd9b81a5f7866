"""Experiment loggers: a tiny LM and a tiny FAR logging to CSV and TensorBoard (scalars and sample pictures read back
with TensorBoard's own reader), W&B offline writing its run folder, and the loss curve every run leaves."""
import pytest
from test_far_training import far_run, golden_far, latent_episodes  # noqa: F401 (fixtures)

from nbp.cli import main
from nbp.config import ConfigError, build_config
from nbp.training.lm import LMTrainConfig

from test_lm_training import MODEL, tokens  # noqa: F401 (fixture)


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.glob("logs/version_*/events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {run_dir}/logs"
    accumulator = EventAccumulator(str(files[-1].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_a_tiny_lm_logs_its_loss_and_samples_to_tensorboard(tokens, tmp_path):  # noqa: F811
    run_dir = tmp_path / "lm"
    assert main(["train-lm", f"run.run_dir={run_dir}", f"train={tokens}", "run.steps=4", "batch_size=4",
                 "run.log_every=1", "run.sample_every=4", "run.loggers=[csv,tensorboard]", "warmup_steps=1",
                 f"decoder={tokens.parent / 'tok.safetensors'}", *MODEL]) == 0
    logged = events(run_dir)
    losses = [event.value for event in logged.Scalars("train/loss")]
    assert len(losses) == 4 and all(0 < value < 20 for value in losses)
    picture = logged.Images("samples")[0]
    assert picture.step == 4 and picture.height > 32 and picture.width > 32
    assert (run_dir / "samples" / "step_00000004.png").is_file() and (run_dir / "loss_curve.png").is_file()
    assert len(list(run_dir.glob("logs/version_0/metrics.csv"))) == 1  # CSV as always


def test_a_tiny_far_logs_to_tensorboard_and_wandb_offline(latent_episodes, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "far"
    assert main(far_run(latent_episodes, run_dir, 3, **{"run.log_every": 1, "run.sample_every": 3,
                                                       "run.loggers": "[csv,tensorboard,wandb]",
                                                       "decoder": latent_episodes / "dcae.safetensors"})) == 0
    logged = events(run_dir)
    assert [event.step for event in logged.Scalars("train/loss")] == [0, 1, 2]
    assert logged.Images("samples")[0].step == 3
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))


def test_an_unknown_logger_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"run.loggers: unknown \['mlflow'\]; choose among \['csv', 'tensorboard'"):
        build_config(LMTrainConfig, overrides=["train=x", "run.loggers=[csv,mlflow]"])
