import re

import pytest

from nbp.cli import main


def test_config_prints_resolved_preset_as_yaml(capsys):
    assert main(["config", "tokenizer", "tiny", "num_res_blocks=3"]) == 0
    out = capsys.readouterr().out
    assert "num_res_blocks: 3\n" in out and "norm_groups: 8\n" in out and "- 16\n" in out


def test_config_lists_presets(capsys):
    assert main(["config", "tokenizer"]) == 0
    assert capsys.readouterr().out.strip() == "tokenizer presets: magvit2, nbp-magvit2, small, tiny, tiny-frames"


def test_config_error_is_a_message_not_a_traceback(capsys):
    assert main(["config", "tokenizer", "tiny", "bogus=1"]) == 2
    assert "nbp config: invalid TokenizerConfig" in capsys.readouterr().err


def test_commands_take_recipes_positional_fields_and_flags():
    from nbp.cli import split_arguments

    recipes, overrides = split_arguments(["a.yaml", "x=1", "--scale", "3", "--fresh", "--out=o", "ckpt", "out.st"],
                                         ("checkpoint", "out"))
    assert recipes == ["a.yaml"] and overrides == ["x=1", "scale=3", "fresh=true", "out=o", "checkpoint=ckpt",
                                                   "out=out.st"]


def test_only_user_errors_become_one_line_messages(capsys, monkeypatch):
    import nbp.cli

    assert main(["sample", "lm=missing.safetensors", "tokenizer=missing.pt"]) == 2
    assert capsys.readouterr().err.startswith("nbp sample: checkpoint missing.pt does not exist")
    assert main(["config", "train-lm", "run.steps=many"]) == 2
    assert "run.steps" in capsys.readouterr().err
    monkeypatch.setattr(nbp.cli, "load", lambda spec: (_ for _ in ()).throw(KeyError("a bug")))
    with pytest.raises(KeyError):  # anything else keeps its traceback
        main(["synthetic"])


@pytest.mark.parametrize("setting, message", [
    ("sampling.top_p=1.5", "top_p must lie in"), ("sampling.temperature=-1", "temperature must be > 0"),
    ("sampling.top_k=0", "top_k must be at least 1"), ("sampling.cfg_scale=-1", "cfg_scale must be >= 0"),
    ("sampling.cfg_schedule=cosine", "cfg_schedule must be one of"),
])
def test_bad_sampling_settings_are_refused_by_name(setting, message, capsys):
    assert main(["sample", "lm=a", "tokenizer=b", setting]) == 2
    assert message in capsys.readouterr().err


def test_a_run_of_no_steps_is_refused(capsys):
    assert main(["config", "train-lm", "train=x", "run.steps=-5"]) == 2
    assert "run.steps must be at least 1" in capsys.readouterr().err


def test_a_protocol_is_a_layer_that_nbp_config_prints_and_refuses_to_contradict(capsys):
    assert main(["config", "far-eval", "protocol=ucf-short"]) == 0
    out = capsys.readouterr().out
    assert "context: 4\n" in out and "horizon: 12\n" in out and "trajectories: 100\n" in out
    assert main(["config", "far-eval", "protocol=ucf-short", "trajectories=100", "seed=3"]) == 0  # agreeing: fine
    assert "trajectories: 100\n" in capsys.readouterr().out
    assert main(["config", "far-eval", "protocol=ucf-short", "trajectories=2"]) == 2
    assert "protocol ucf-short fixes trajectories=100, but trajectories=2 was given" in capsys.readouterr().err
    assert main(["config", "far-eval", "protocol=custom", "trajectories=2"]) == 0
    assert "trajectories: 2\n" in capsys.readouterr().out


def test_what_nbp_config_prints_is_what_runs():
    """The run functions apply a protocol to configs built in Python; to one resolved from the command line they
    change nothing, and a value set against the protocol in Python is refused as on the command line."""
    from nbp.config import ConfigError, build_config, with_protocol
    from nbp.data.dataset import ClipConfig
    from nbp.eval.far import FAREvalConfig
    from nbp.eval.far_generation import FARGenerationEvalConfig

    paths = ["far=f", "dcae=d", "data=x"]
    for protocol in ("dmlab-long", "ucf-short"):
        resolved = build_config(FAREvalConfig, overrides=[*paths, f"protocol={protocol}"])
        assert with_protocol(resolved) == resolved
        assert with_protocol(FAREvalConfig(far="f", dcae="d", data="x", protocol=protocol)) == resolved
    assert with_protocol(FARGenerationEvalConfig(far="f", dcae="d", i3d="i", protocol="latte-ucf",
                                                clips=ClipConfig(root="r"))).videos == 2048
    with pytest.raises(ConfigError, match="fixes trajectories=100"):
        with_protocol(FAREvalConfig(far="f", dcae="d", data="x", protocol="ucf-short", trajectories=2))


def test_every_command_resolves_its_config_class_and_function():
    from nbp.cli import COMMANDS, load

    for command in COMMANDS.values():
        config, run = load(command.config), load(command.run)
        assert isinstance(config, type) and callable(run), command.name
        assert main(["config", command.name]) == 0, command.name  # its defaults resolve (paths left as ???)


FAR_SAMPLING = {"steps": 3, "cfg_scale": 1.5, "use_cache": False, "decoding": "dynamic", "context_noise": 0.25,
                "long_frames": 6}


@pytest.mark.parametrize("command,section", [("sample-far", "sampling"), ("far-eval", "sampling"),
                                             ("far-gen-eval", "sampling"), ("world-eval", "far_sampling"),
                                             ("play", "far_sampling"), ("world-drift", "far_sampling")])
def test_every_far_sampling_field_is_settable_from_every_far_job(command, section, capsys):
    from omegaconf import OmegaConf

    assert main(["config", command, *(f"{section}.{k}={v}" for k, v in FAR_SAMPLING.items())]) == 0
    assert OmegaConf.to_container(OmegaConf.create(capsys.readouterr().out))[section] == FAR_SAMPLING


def test_the_command_line_and_the_metrics_do_not_import_the_model_families():
    """`nbp --help` stays instant, and FVD does not pull FAR's DC-AE (diffusers) through the checkpoint package."""
    import subprocess
    import sys

    probe = ("import sys, nbp.cli; a = {m for m in ('torch', 'diffusers') if m in sys.modules}; import nbp.metrics; "
             "print(sorted(a), 'diffusers' in sys.modules, 'nbp.models.far' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "False", "False"]


def test_every_commands_help_and_config_read_its_settings_without_torch():
    """`nbp COMMAND --help` and `nbp config COMMAND` (and a model's presets) load only the torch-free config modules,
    so they answer as fast as `nbp --help`; `device: auto` is printed as given, to be resolved when the command runs."""
    import subprocess
    import sys

    probe = ("import contextlib, io, sys\nfrom nbp.cli import COMMANDS, MODEL_CONFIGS, main\nout = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n"
             "    codes = [main([name, '--help']) + main(['config', name]) for name in COMMANDS]\n"
             "    codes += [main(['config', name]) for name in MODEL_CONFIGS] + [main(['config', 'far', 'far-b-long'])]\n"
             "    codes.append(main(['config', 'far-eval', '--trust-checkpoints']))  # the flag reads no file here\n"
             "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'diffusers', 'scipy', 'av', 'einx'}\n"
             "print(sorted(heavy), set(codes), 'device: auto' in out.getvalue())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "{0}", "True"]


@pytest.mark.parametrize("argv, message", [
    (["train-far", "train=x", "run.devices=0"], "run.devices must be at least 1"),
    (["train-far", "train=x", "batch_size=0"], "batch_size must be at least 1"),
    (["train-far", "train=x", "lr=-1"], "lr must be > 0"),
    (["train-far", "train=x", "ema_decay=1.5"], r"ema_decay in \[0, 1\)"),
    (["train-far", "train=x", "model.short_window=0"], "model: short_window must be at least 1"),
    (["train-dcae", "data.root=x", "scale_clips=0"], "scale_clips must be at least 1"),
    (["sample-far", "far=a", "dcae=b", "fps=0"], "fps must be > 0"),
    (["far-eval", "far=a", "dcae=b", "data=c", "trajectories=0"], "trajectories must be at least 1"),
    (["far-eval", "far=a", "dcae=b", "data=c", "horizon=0"], "horizon must be at least 1"),
    (["far-eval", "far=a", "dcae=b", "data=c", "max_videos=0"], "max_videos must be at least 1"),
    (["world-eval", "far=a", "dcae=b", "episodes=e", "horizon=0"], "horizon must be at least 1"),
    (["world-eval", "far=a", "dcae=b", "episodes=e", "far_sampling.steps=0"], "far_sampling: steps must be at least 1"),
])
def test_bad_far_settings_are_one_line_errors_naming_the_setting(argv, message, capsys):
    """Issue 32, item 7: refused where the setting is declared, before any file is read."""
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert re.search(message, error) and "Traceback" not in error and error.count("\n") == 1


def test_a_device_torch_does_not_have_and_an_output_file_are_refused(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["sample-far", "far=a", "dcae=b", "device=cuda"]) == 2
    assert "device=cuda, but this torch sees no CUDA GPU" in capsys.readouterr().err
    assert main(["train-far", "train=x", "run.accelerator=cuda"]) == 2
    assert "run.accelerator=cuda, but this torch sees no CUDA GPU" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["far-eval", "far=a", "dcae=b", "data=c", f"out={tmp_path / 'file'}"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_every_setting_of_every_command_has_a_type_a_default_and_a_help_line():
    import dataclasses

    from nbp.cli import COMMANDS, load
    from nbp.config_help import settings

    undocumented = [f"{name}: {s.key}" for name, command in COMMANDS.items() for s in settings(load(command.config)())
                    if not s.help]
    assert undocumented == []
    rows = {s.key: s for s in settings(load(COMMANDS["train-far"].config)())}
    assert rows["lr"].type == "float" and rows["lr"].default == 1e-4 and rows["train"].required
    assert rows["model.num_classes"].help.startswith("labels or actions")  # the comment beside the field
    assert rows["run.precision"].help.startswith('"bf16-mixed" on GPUs')  # a nested config's own comment
    from nbp.training.far import FARTrainConfig
    leaves = sum(len(dataclasses.fields(v)) if dataclasses.is_dataclass(v) else 1
                 for v in (getattr(FARTrainConfig(), f.name) for f in dataclasses.fields(FARTrainConfig)))
    assert len(rows) == leaves


def test_command_help_lists_every_setting_and_config_comments_them(capsys):
    from omegaconf import OmegaConf

    assert main(["train-far", "--help"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  lr +float +0.0001 +peak learning rate", out, re.M)
    assert re.search(r"^  train +str +required +a latent dataset", out, re.M)
    assert main(["config", "train-far", "train=x", "--comments"]) == 0
    commented = capsys.readouterr().out
    assert "  steps: 1000  # batches\n" in commented
    assert main(["config", "train-far", "train=x"]) == 0
    assert OmegaConf.create(commented) == OmegaConf.create(capsys.readouterr().out)


def test_missing_settings_come_in_one_line_and_a_mistyped_command_gets_a_suggestion(capsys):
    assert main(["sample-far"]) == 2
    assert capsys.readouterr().err.strip().startswith("nbp sample-far: missing required settings: dcae, far (give")
    assert main(["trian-far"]) == 2
    assert "unknown command 'trian-far'; did you mean 'train-far'" in capsys.readouterr().err


def test_version_from_the_command_line_and_python_m(capsys):
    import subprocess
    import sys

    import nbp

    assert re.fullmatch(r"\d+\.\d+\.\d+", nbp.__version__)
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"nbp {nbp.__version__}\n"
    done = subprocess.run([sys.executable, "-m", "nbp", "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"nbp {nbp.__version__}\n")


def test_nbp_config_refuses_a_bad_value_even_with_required_settings_left_out(capsys):
    assert main(["config", "train-far", "lr=-1"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err
    assert main(["config", "train-far"]) == 0 and "train: ???" in capsys.readouterr().out
