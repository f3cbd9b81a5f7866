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
