"""FAR in nbp against the official code's outputs (../shared/golden/far_small.npz): the transformer's teacher-forced
velocities, FAR_Long, sampling with and without the caches, and the DC-AE; loaded from official-format files."""
import json

import numpy as np
import pytest
import torch

from nbp.checkpoint import CheckpointError, load_model, save_model
from nbp.checkpoint.perceptual import PerceptualConfig, load_perceptual
from nbp.cli import main
from nbp.config import ConfigError, InputError, from_preset
from nbp.data.dataset import ClipConfig
from nbp.download import load_dcae, load_far
from nbp.generation import far as far_sampling
from nbp.generation.far import FARSamplingConfig, flow_schedule, generate_latents
from nbp.models.far import FAR, FARConfig
from nbp.pipelines.far import FARPipeline
from nbp.training.far_loss import far_loss, far_loss_terms

from conftest import det_state_dict, golden_dir

CONDITIONS = {"label": ("label", 5), "uncond": ("none", 0), "action": ("action", 4)}

# The model's float32 velocities (|v| up to ~1.5) against the goldens: matmuls on another CPU kind sum in another
# order (the Intel AMX machine of 2026-12-02: up to 1.06e-5 off), so 3e-5.
VELOCITY_ATOL = 3e-5


@pytest.fixture(scope="module")
def spec():
    return json.loads((golden_dir() / "far_small_spec.json").read_text())


@pytest.fixture(scope="module")
def far_golden():
    return {k: torch.from_numpy(v) for k, v in np.load(golden_dir() / "far_small.npz").items()}


@pytest.fixture(scope="module")
def official_files(spec, tmp_path_factory):
    """The official formats: `FAR_*.pth` and `DCAE_*.pth` are plain state dicts saved with torch.save."""
    folder = tmp_path_factory.mktemp("far")
    files = {}
    for name in CONDITIONS:
        files[name] = folder / f"FAR_{name}.pth"
        torch.save(det_state_dict(spec["far"][f"{name}_spec"], spec["far"]["seed"]), files[name])
    files["long"] = folder / "FAR_Long.pth"
    torch.save(det_state_dict(spec["far_long"]["spec"], spec["far_long"]["seed"]), files["long"])
    files["dcae"] = folder / "DCAE.pth"
    torch.save(det_state_dict(spec["dcae"]["spec"], spec["dcae"]["seed"]), files["dcae"])
    return files


def test_the_architecture_follows_from_an_official_file(official_files):
    label = load_far(official_files["label"])
    cfg = label.config
    assert (cfg.num_layers, cfg.num_heads, cfg.condition, cfg.num_classes, cfg.long) == (2, 2, "label", 5, False)
    assert cfg.preset == "far-tiny" and not label.training
    long = load_far(official_files["long"], short_window=4)
    assert (long.config.long, long.config.condition, long.config.context_patch_size, long.config.short_window) == \
        (True, "action", 4, 4)
    assert load_far(official_files["uncond"], slope_scale=0.5).config.slope_scale == 0.5
    with pytest.raises(CheckpointError, match="not an official FAR transformer file"):
        load_far(official_files["dcae"])


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_teacher_forced_velocity_of_every_frame_equals_the_official(name, official_files, far_golden):
    g = far_golden
    model = load_far(official_files[name])
    with torch.no_grad():
        out = model(g["tf_x"], g["tf_t"], labels=g["tf_label"] if name == "label" else None,
                    actions=g["tf_action"] if name == "action" else None)
    torch.testing.assert_close(out, g[f"tf_{name}_out"], atol=VELOCITY_ATOL, rtol=0)


def test_slope_scale_and_label_ids_change_the_output_as_officially(official_files, far_golden):
    g = far_golden
    with torch.no_grad():
        out = load_far(official_files["uncond"], slope_scale=0.5)(g["tf_x"], g["tf_t"])
        torch.testing.assert_close(out, g["tf_uncond_slope_out"], atol=VELOCITY_ATOL, rtol=0)
        assert (out - g["tf_uncond_out"]).abs().max() > 1e-2  # the slope is not a no-op
        model = load_far(official_files["label"])
        null = model(g["tf_x"], g["tf_t"], labels=torch.full((2,), 5))
        assert (null - g["tf_label_out"]).abs().max() > 1e-2
        assert torch.equal(model(g["tf_x"], g["tf_t"]), null)  # no labels: the null id


def test_far_long_with_long_term_context_and_without(official_files, far_golden):
    g = far_golden
    model = load_far(official_files["long"], short_window=4)
    with torch.no_grad():
        out = model(g["ltf_x"], g["ltf_t"], actions=g["ltf_action"])  # 3 long-term frames + a window of 4
        short = model(g["ltf_x"][:, :3], g["ltf_t"][:, :3], actions=g["ltf_action"][:, :3])
    torch.testing.assert_close(out, g["ltf_out"], atol=VELOCITY_ATOL, rtol=0)
    torch.testing.assert_close(short, g["ltf_short_out"], atol=VELOCITY_ATOL, rtol=0)


def test_the_flow_schedule_is_the_official_one(far_golden):
    timesteps, sigmas = flow_schedule(4)
    torch.testing.assert_close(timesteps, far_golden["sched_timesteps"], atol=0, rtol=0)
    torch.testing.assert_close(sigmas, far_golden["sched_sigmas"], atol=0, rtol=0)
    assert flow_schedule(50)[0][1].item() == pytest.approx(979.6122, abs=1e-4)


SAMPLING = [  # golden case, model file, conditions, guidance, with context
    ("pipe_label_cfg", "label", "labels", 2.0, True),
    ("gen_label_cfg", "label", "labels", 2.0, False),
    ("pipe_uncond", "uncond", None, 1.0, True),
    ("pipe_action_cfg", "action", "actions", 1.5, True),
    ("pipe_action_free", "action", "actions", -1, True),
]


# (use_cache, decoding, the golden's variant): "static" is the fixed-shape step a GPU replays as a CUDA graph, run eagerly
CACHING = {"kv": (True, "dynamic", "kv"), "static": (True, "static", "kv"), "nokv": (False, "dynamic", "nokv")}


@pytest.mark.parametrize("caching", CACHING)
@pytest.mark.parametrize("case,name,condition,guidance,context", SAMPLING, ids=[c[0] for c in SAMPLING])
def test_sampling_equals_the_official_pipeline(case, name, condition, guidance, context, caching, official_files,
                                               far_golden):
    g = far_golden
    use_cache, decoding, variant = CACHING[caching]
    conditions = {"labels": {"labels": g["pipe_label"]}, "actions": {"actions": g["pipe_action"]}, None: {}}[condition]
    sampling = FARSamplingConfig(steps=4, cfg_scale=guidance, use_cache=use_cache, decoding=decoding)
    out = generate_latents(load_far(official_files[name]), 3, g["pipe_ctx_latents"] if context else None,
                           noise=g["pipe_noise"], sampling=sampling, **conditions)
    torch.testing.assert_close(out, g[f"{case}_{variant}"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("caching", CACHING)
def test_far_long_rollout_past_its_window_equals_the_official(caching, official_files, far_golden, monkeypatch):
    g = far_golden
    use_cache, decoding, variant = CACHING[caching]
    frames_denoised = []  # the fixed-shape steps must run (not the dynamic ones) exactly when asked for
    denoise_frame = far_sampling.FrameDenoiser.__call__
    monkeypatch.setattr(far_sampling.FrameDenoiser, "__call__",
                        lambda self, noise, frame, levels: frames_denoised.append(frame) or denoise_frame(self, noise, frame, levels))
    out = generate_latents(load_far(official_files["long"], short_window=4), 5, g["lpipe_ctx_latents"],
                           actions=g["lpipe_action"], noise=g["lpipe_noise"],
                           sampling=FARSamplingConfig(steps=4, cfg_scale=1.5, use_cache=use_cache, decoding=decoding))
    torch.testing.assert_close(out, g[f"lpipe_action_cfg_{variant}"], atol=1e-4, rtol=0)
    given = g["lpipe_ctx_latents"].shape[1]
    assert frames_denoised == (list(range(given, given + 5)) if decoding == "static" else [])


def test_context_noise_shows_generated_window_frames_noisy_and_every_decoding_agrees(official_files, far_golden,
                                                                                    monkeypatch):
    g = far_golden
    model = load_far(official_files["long"], short_window=4)
    seen = []  # (first frame, frames, long-term, timesteps) of every embedding of clean or noised context frames
    embed, denoising = FAR.embed, flow_schedule(3)[0].tolist()

    def recording(self, latents, timesteps, first_frame, labels, actions, long_term=False):
        if latents.shape[1] > 1 or timesteps[0, 0].item() not in denoising:
            seen.append((first_frame, latents.shape[1], long_term, timesteps[0].tolist()))
        return embed(self, latents, timesteps, first_frame, labels, actions, long_term)

    def rollout(use_cache=True, decoding="dynamic", context_noise=0.2):
        sampling = FARSamplingConfig(steps=3, use_cache=use_cache, decoding=decoding, context_noise=context_noise)
        return generate_latents(model, 5, g["lpipe_ctx_latents"], actions=g["lpipe_action"], sampling=sampling,
                                generator=torch.Generator().manual_seed(0))

    clean = rollout(context_noise=0.0)
    monkeypatch.setattr(FAR, "embed", recording)
    noisy = rollout()
    given = g["lpipe_ctx_latents"].shape[1]
    assert torch.equal(noisy[:, :given], g["lpipe_ctx_latents"]) and not torch.allclose(noisy, clean)
    for first, frames, long_term, timesteps in seen:
        generated = [first + i >= given for i in range(frames)]
        expected = [200.0 if new and not long_term else -1.0 for new in generated]
        assert timesteps == pytest.approx(expected), (first, frames, long_term)
    assert any(t > 0 for *_, timesteps in seen for t in timesteps)  # a generated frame was seen noisy
    assert any(lt and first + n > given for first, n, lt, _ in seen)  # and a generated frame went long-term, clean
    monkeypatch.undo()
    for use_cache, decoding in ((True, "static"), (False, "dynamic")):
        torch.testing.assert_close(rollout(use_cache, decoding), noisy, atol=1e-4, rtol=0)


def test_dcae_maps_video_to_latents_and_back_as_far(official_files, far_golden):
    g = far_golden
    dcae = load_dcae(official_files["dcae"])
    assert dcae.config.preset == "dcae-tiny" and dcae.config.latent_size == 8
    video = g["vae_video_u8"].float().div(255).permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
    with torch.no_grad():
        latents = dcae.encode_video(video)
        torch.testing.assert_close(latents, g["vae_latents"], atol=1e-4, rtol=0)
        torch.testing.assert_close(dcae.decode_video(g["vae_latents"]), g["vae_recon"], atol=1e-4, rtol=0)
        unclamped = dcae.decode_video(g["vae_latents"], clamp=False)  # the decoder's output, mapped to [0, 1] unclamped
        torch.testing.assert_close(unclamped, g["vae_recon_raw"] / 2 + 0.5, atol=1e-4, rtol=0)
        ctx = g["pipe_ctx_video_u8"].float().div(255).permute(0, 1, 4, 2, 3)
        torch.testing.assert_close(dcae.encode_video(ctx), g["pipe_ctx_latents"], atol=1e-4, rtol=0)
        torch.testing.assert_close(dcae.decode_video(g["pipe_label_cfg_kv"]), g["pipe_label_cfg_kv_video"], atol=1e-4, rtol=0)
        torch.testing.assert_close(dcae.encode_video(video, frames_per_batch=1), latents, atol=1e-5, rtol=0)


def test_nbp_files_of_far_and_dcae_reload_exactly(official_files, tmp_path, far_golden):
    far = load_far(official_files["long"], short_window=4)
    save_model(far, tmp_path / "far.safetensors")
    again = load_far(tmp_path / "far.safetensors")
    assert again.config == far.config
    assert all(torch.equal(a, b) for a, b in zip(far.state_dict().values(), again.state_dict().values()))
    dcae = load_dcae(official_files["dcae"])
    save_model(dcae, tmp_path / "dcae.safetensors")
    assert load_model(tmp_path / "dcae.safetensors", kind="dcae").config == dcae.config
    with torch.no_grad():
        torch.testing.assert_close(load_dcae(tmp_path / "dcae.safetensors").decode_video(far_golden["vae_latents"]),
                                   far_golden["vae_recon"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name,parameters,tensors", [
    ("far-b", 129_560_864, 226), ("far-m", 230_156_832, 226), ("far-l", 456_835_104, 442),
    ("far-xl", 673_703_584, 514), ("far-b-long", 158_111_776, 349), ("far-m-long", 280_544_800, 349)])
def test_presets_have_the_official_sizes(name, parameters, tensors):
    with torch.device("meta"):
        state = FAR(from_preset(FARConfig, name)).state_dict()
    assert (sum(v.numel() for v in state.values()), len(state)) == (parameters, tensors)


def test_label_presets_of_101_classes_have_the_official_sizes():
    with torch.device("meta"):
        state = FAR(from_preset(FARConfig, "far-xl", condition="label", num_classes=101)).state_dict()
    assert (sum(v.numel() for v in state.values()), len(state)) == (673_821_088, 515)


def test_a_new_model_has_fars_initialization():
    """adaLN-Zero as FAR's `initialize_weights`: a zero velocity, so the first gradient reaches the output layers only;
    Xavier-uniform linears elsewhere, N(0, 0.02) embeddings."""
    torch.manual_seed(0)
    model = FAR(from_preset(FARConfig, "far-tiny-long", num_classes=17))
    latents, timesteps = torch.randn(2, 6, 32, 8, 8), torch.rand(2, 6) * 1000
    velocity = model(latents, timesteps, actions=torch.randint(0, 17, (2, 6)))
    assert velocity.shape == latents.shape and not velocity.any()
    velocity.sum().backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    assert reached == {f"{out}.{p}" for out in ("proj_out", "context_proj_out") for p in ("weight", "bias")}
    query = model.transformer_blocks[0].attn.to_q.weight
    bound = (6 / sum(query.shape)) ** 0.5
    assert query.abs().max() <= bound and abs(query.std() / (bound / 3 ** 0.5) - 1) < 0.05
    assert abs(model.action_embedder.embedding_table.weight.std() - 0.02) < 0.004
    assert not model.transformer_blocks[1].norm2.linear.weight.any() and not model.transformer_blocks[0].attn.to_q.bias.any()


def test_bad_configs_and_conditions_are_refused():
    with pytest.raises(ConfigError, match="num_classes > 0"):
        FAR(from_preset(FARConfig, "far-tiny", condition="label"))
    with pytest.raises(ConfigError, match="not labels"):
        FAR(from_preset(FARConfig, "far-tiny-long", condition="label", num_classes=3))
    model = FAR(from_preset(FARConfig, "far-tiny", condition="label", num_classes=5)).eval()
    with pytest.raises(ValueError, match="give labels"):
        generate_latents(model, 1, batch=1, sampling=FARSamplingConfig(steps=1))
    with pytest.raises(ConfigError, match="action-conditioned"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(steps=1, cfg_scale=-1))
    with pytest.raises(ConfigError, match="steps must be"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(steps=0))
    with pytest.raises(ConfigError, match="needs use_cache"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(use_cache=False,
                                                                                        decoding="static"))
    with pytest.raises(ConfigError, match="decoding must be one of"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(decoding="graphs"))
    with pytest.raises(ConfigError, match="context_noise must be"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(context_noise=1.0))
    with pytest.raises(InputError, match="CUDA graphs need"):
        generate_latents(model, 1, labels=torch.tensor([1]), sampling=FARSamplingConfig(steps=1, decoding="cuda-graphs"))


def test_training_loss_from_the_recorded_draws_equals_the_official(official_files, far_golden):
    g = far_golden
    clean = g["loss_ctx_uniform"] < 0.1
    labels = torch.where(g["loss_label_uniform"] < 0.1, 5, g["loss_label"])
    assert torch.equal(clean, g["loss_context_mask"]) and torch.equal(labels == 5, g["loss_label_dropped"])
    model = load_far(official_files["label"])
    with torch.no_grad():
        terms = far_loss_terms(model, g["loss_latent"] * 0.2889, g["loss_u"], g["loss_noise"], clean, labels=labels)
        loss = far_loss(model, g["loss_latent"] * 0.2889, g["loss_u"], g["loss_noise"], clean, labels=labels)
    torch.testing.assert_close(terms.timesteps, g["loss_t_in"], atol=0, rtol=0)
    torch.testing.assert_close(terms.prediction, g["loss_pred"], atol=VELOCITY_ATOL, rtol=0)
    torch.testing.assert_close(loss, g["loss_value"], atol=0, rtol=1e-6)


def test_long_context_training_loss_equals_the_official(official_files, far_golden):
    g = far_golden
    start, length = int(g["lloss_start"]), int(g["lloss_num_frames"])  # the clip sampler's draws
    x0 = g["lloss_latent"][:, start:start + length] * 0.2889
    actions = g["lloss_action"][:, start:start + length]
    window = 4
    dropped = torch.cat([g["lloss_act_uniform_long"].view(2, -1), g["lloss_act_uniform_window"].view(2, -1)], 1) < 0.1
    actions = torch.where(dropped, 4, actions)
    clean = torch.cat([torch.ones(2, length - window, dtype=torch.bool), g["lloss_ctx_uniform"] < 0.1], 1)
    assert torch.equal(clean, g["lloss_context_mask"])
    model = load_far(official_files["long"], short_window=window)
    with torch.no_grad():
        terms = far_loss_terms(model, x0, g["lloss_u"], g["lloss_noise"], clean, actions=actions)
    torch.testing.assert_close(terms.timesteps, g["lloss_t_in"], atol=0, rtol=0)
    torch.testing.assert_close(terms.prediction, g["lloss_pred"], atol=VELOCITY_ATOL, rtol=0)
    torch.testing.assert_close(terms.loss, g["lloss_value"], atol=0, rtol=1e-6)


def count_frames_fed(monkeypatch) -> list[tuple[int, bool, bool]]:
    """Records (frames, long-term, cached) of every run of tokens through the blocks."""
    fed, run = [], FAR.run

    def counting(self, runs, past=(), keep=False):
        fed.extend((len(t) // (t.grid[0] * t.grid[1]), t.long_term, keep) for t in runs)
        return run(self, runs, past, keep)

    monkeypatch.setattr(FAR, "run", counting)
    return fed


def test_the_cached_sampler_computes_each_context_frame_once(official_files, far_golden, monkeypatch):
    g = far_golden
    fed = count_frames_fed(monkeypatch)
    generate_latents(load_far(official_files["uncond"]), 3, g["pipe_ctx_latents"], steps=4, noise=g["pipe_noise"])
    # the 2 given frames, then each generated frame once (the last is never context); each Euler step the noisy
    # frame alone
    step = (1, False, False)
    assert fed == [(2, False, True), *[step] * 4, (1, False, True), *[step] * 4, (1, False, True), *[step] * 4]
    fed.clear()
    generate_latents(load_far(official_files["uncond"]), 3, g["pipe_ctx_latents"], steps=4, noise=g["pipe_noise"],
             use_cache=False)
    assert [frames for frames, _, _ in fed] == [3] * 4 + [4] * 4 + [5] * 4  # without: the whole sequence every step


def test_past_the_window_each_frame_costs_the_same(official_files, monkeypatch):
    model = load_far(official_files["long"], short_window=4)
    fed = count_frames_fed(monkeypatch)
    generate_latents(model, 9, None, steps=2, actions=torch.zeros(1, 9, dtype=torch.long), batch=1,
             generator=torch.Generator().manual_seed(0), latent_size=8)
    step = (1, False, False)
    within = [step, step] + [(1, False, True), step, step] * 3  # frames 0-3: the window grows by one clean frame
    # frames 4-8: the oldest window frame enters the long-term context (computed once), the 3 clean window frames
    # are recomputed (their context changed), then the steps
    past = [(1, True, True), (3, False, True), step, step] * 5
    assert fed == within + past


def test_an_action_changes_predictions_only_from_its_frame_on(official_files, far_golden):
    g = far_golden
    model = load_far(official_files["action"])
    actions = g["tf_action"].clone()
    actions[:, 2] = (actions[:, 2] + 1) % 4
    with torch.no_grad():
        before, after = model(g["tf_x"], g["tf_t"], actions=g["tf_action"]), model(g["tf_x"], g["tf_t"], actions=actions)
    assert torch.equal(before[:, :2], after[:, :2])
    assert (before[:, 2:] - after[:, 2:]).abs().amax(dim=(2, 3, 4)).min() > 1e-3


def test_bad_inputs_get_clear_errors(official_files, far_golden):
    g = far_golden
    uncond, action = load_far(official_files["uncond"]), load_far(official_files["action"])
    with pytest.raises(ValueError, match=r"\(B, T, 32, h, w\)"):
        generate_latents(uncond, 1, g["pipe_ctx_latents"][:, :, :16], steps=1)
    with pytest.raises(ValueError, match="labels given to a FAR model conditioned on 'none'"):
        generate_latents(uncond, 1, g["pipe_ctx_latents"], steps=1, labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 3\]"):
        generate_latents(action, 1, g["pipe_ctx_latents"], steps=1, actions=torch.full((2, 3), 7))
    with pytest.raises(ValueError, match="actions cover 2 frames"):
        generate_latents(action, 1, g["pipe_ctx_latents"], steps=1, actions=torch.zeros(2, 2, dtype=torch.long))
    long = load_far(official_files["long"], short_window=4)
    with pytest.raises(ValueError, match="4x4 patches"):
        generate_latents(long, 1, torch.zeros(1, 2, 32, 6, 6), steps=1, actions=torch.zeros(1, 3, dtype=torch.long))


def test_sample_far_rolls_out_an_episode_with_its_actions(official_files, far_golden, tmp_path, capsys):
    video = far_golden["lpipe_ctx_video_u8"][0].numpy()  # (2, 64, 64, 3)
    episode = tmp_path / "episode.npz"
    np.savez(episode, video=np.concatenate([video, video, video]), actions=np.array([0, 1, 2, 3, 0, 1]))
    out = tmp_path / "samples"
    argv = ["sample-far", f"far={official_files['long']}", f"dcae={official_files['dcae']}", f"out={out}",
            f"episode={episode}", "context_frames=2", "frames=3", "sampling.steps=2", "num_samples=2",
            "sampling.cfg_scale=1.5", "short_window=4"]
    assert main(argv) == 0
    assert "wrote 2 videos" in capsys.readouterr().out
    samples = np.load(out / "samples_uint8.npy")
    assert samples.shape == (2, 5, 64, 64, 3) and (out / "contact_sheet.png").is_file()
    assert len(list(out.glob("sample_*.mp4"))) == 2
    assert not np.array_equal(samples[0], samples[1])  # each sample its own noise
    assert main([*argv, "actions=[0,1]"]) == 2  # too few actions for 5 frames: refused with a message
    assert "2 actions for 5 frames" in capsys.readouterr().err
    sharded = tmp_path / "sharded"  # as `nbp sample` shards: one array per sample, each drawn as unsharded
    assert main([*argv[:3], f"out={sharded}", *argv[4:], "sharded=true"]) == 0
    assert "rank 0/1: wrote 2 samples" in capsys.readouterr().out
    for i in range(2):
        assert np.array_equal(np.load(sharded / "samples" / f"{i:06d}.npy"), samples[i])


def test_the_pipeline_continues_videos_from_their_reconstruction(official_files, far_golden):
    g = far_golden
    pipeline = FARPipeline(load_dcae(official_files["dcae"]), load_far(official_files["label"]))
    context = g["pipe_ctx_video_u8"].float().div(255).permute(0, 4, 1, 2, 3)  # nbp's (B, 3, T, H, W)
    out = pipeline(3, context, steps=4, cfg_scale=2.0, labels=g["pipe_label"], noise=g["pipe_noise"])
    torch.testing.assert_close(out.latents, g["pipe_label_cfg_kv"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.videos, g["pipe_label_cfg_kv_video"].transpose(1, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("caching", CACHING)
@pytest.mark.parametrize("case,name,condition,guidance,context", SAMPLING, ids=[c[0] for c in SAMPLING])
def test_every_sampling_golden_through_the_unified_pipeline(case, name, condition, guidance, context, caching,
                                                           official_files, far_golden):
    """The pipeline every family shares (video in, `sampling=`, VideoOutput out) gives the official latents, from
    the context video (encoded by the DC-AE) or from nothing (the size from the noise)."""
    g = far_golden
    use_cache, decoding, variant = CACHING[caching]
    conditions = {"labels": {"labels": g["pipe_label"]}, "actions": {"actions": g["pipe_action"]}, None: {}}[condition]
    pipeline = FARPipeline(load_dcae(official_files["dcae"]), load_far(official_files[name]))
    video = g["pipe_ctx_video_u8"].float().div(255).permute(0, 4, 1, 2, 3) if context else None
    sampling = FARSamplingConfig(steps=4, cfg_scale=guidance, use_cache=use_cache, decoding=decoding)
    out = pipeline(3, video, sampling=sampling, noise=g["pipe_noise"], **conditions)
    torch.testing.assert_close(out.latents, g[f"{case}_{variant}"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("caching", CACHING)
def test_the_far_long_golden_through_the_unified_pipeline(caching, official_files, far_golden):
    g = far_golden
    use_cache, decoding, variant = CACHING[caching]
    long = FARPipeline(load_dcae(official_files["dcae"]), load_far(official_files["long"], short_window=4))
    video = g["lpipe_ctx_video_u8"].float().div(255).permute(0, 4, 1, 2, 3)
    sampling = FARSamplingConfig(steps=4, cfg_scale=1.5, use_cache=use_cache, decoding=decoding)
    out = long(5, video, sampling=sampling, actions=g["lpipe_action"], noise=g["lpipe_noise"])
    torch.testing.assert_close(out.latents, g[f"lpipe_action_cfg_{variant}"], atol=1e-4, rtol=0)


def test_dcae_config_can_be_named_or_given_as_the_diffusers_json(official_files, spec, tmp_path, far_golden):
    config_file = tmp_path / "model_8x_c32_config.json"
    config_file.write_text(json.dumps(spec["dcae"]["config"]))
    for config in ("dcae-tiny", config_file, spec["dcae"]["config"]):
        dcae = load_dcae(official_files["dcae"], config=config)
        with torch.no_grad():
            torch.testing.assert_close(dcae.decode_video(far_golden["vae_latents"]), far_golden["vae_recon"],
                                       atol=1e-4, rtol=0)
    with pytest.raises(CheckpointError, match="does not match the DCAE architecture"):
        load_dcae(official_files["dcae"], config="dcae-8x")
    with pytest.raises(CheckpointError, match="not an official DC-AE file"):
        load_dcae(official_files["label"])


def test_far_eval_keeps_the_best_of_its_trajectories(official_files, far_golden, tmp_path, capsys):
    from nbp.eval.far import FAREvalConfig, evaluate_far, frame_scores, trajectories

    video = far_golden["lpipe_ctx_video_u8"].numpy()  # (2, 2, 64, 64, 3)
    folder = tmp_path / "episodes"
    folder.mkdir()
    for i in range(2):
        frames = np.concatenate([video[i], video[1 - i]])  # 4 frames
        np.savez(folder / f"ep_{i}.npz", video=frames, actions=np.array([0, 1, 2, 3]))
    cfg = FAREvalConfig(far=str(official_files["action"]), dcae=str(official_files["dcae"]), data=str(folder),
                        out=str(tmp_path / "eval"), context=2, horizon=2, trajectories=3,
                        sampling=FARSamplingConfig(steps=1))
    result = evaluate_far(cfg)
    assert (result["videos"], result["trajectories"], len(result["psnr_curve"])) == (2, 3, 2)
    pipeline = FARPipeline(load_dcae(official_files["dcae"]), load_far(official_files["action"]))
    best = []
    for index in range(2):
        frames = np.load(folder / f"ep_{index}.npz")["video"]
        means = [float(frame_scores(p[2:], frames[2:])[0].mean()) for p in
                 trajectories(cfg, pipeline, frames, np.array([0, 1, 2, 3]), index)]
        assert len(set(means)) == 3  # each trajectory its own noise
        best.append(max(means))
    assert result["predicted"]["psnr"] == pytest.approx(np.mean(best), abs=1e-6)
    truncated = evaluate_far(FAREvalConfig(**{**cfg.__dict__, "uint8_truncation": True}))
    assert truncated["predicted"]["psnr"] != result["predicted"]["psnr"]
    assert (tmp_path / "eval" / "psnr_over_horizon.png").is_file()
    assert main(["far-eval", f"far={official_files['action']}", f"dcae={official_files['dcae']}", f"data={folder}",
                 f"out={tmp_path / 'cli'}", "protocol=bair-short"]) == 2  # 2 + 28 frames: none long enough
    assert "has 30 frames" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="protocol must be one of"):
        evaluate_far(FAREvalConfig(**{**cfg.__dict__, "protocol": "ucf-long"}))


def test_far_eval_lpips_is_the_best_trajectory_and_fvd_the_mean_over_trajectories(official_files, tmp_path,
                                                                                   monkeypatch):
    from nbp.eval.far import FAREvalConfig, evaluate_far, trajectories
    from nbp.metrics import InceptionI3d, i3d_features, load_i3d
    from nbp.models.lpips import LPIPS

    rng, videos = np.random.default_rng(1), 3
    folder, weights = tmp_path / "episodes", tmp_path / "weights"
    folder.mkdir(), weights.mkdir()
    for i in range(videos):
        np.savez(folder / f"ep_{i}.npz", video=rng.integers(0, 256, (11, 64, 64, 3), dtype=np.uint8),
                 actions=rng.integers(0, 4, 11))
    lpips_keys = {k: list(v.shape) for k, v in LPIPS("alex").state_dict().items() if k not in ("shift", "scale")}
    lpips_state = det_state_dict(list(lpips_keys.items()), 4)
    torch.save({k: v for k, v in lpips_state.items() if k.startswith("features.")}, weights / "alexnet.pth")
    torch.save({k: v.abs() for k, v in lpips_state.items() if k.startswith("lin")}, weights / "alex.pth")
    torch.save(det_state_dict([(k, list(v.shape)) for k, v in InceptionI3d(400).state_dict().items()], 3, 2.0),
               weights / "i3d.pt")
    cfg = FAREvalConfig(far=str(official_files["action"]), dcae=str(official_files["dcae"]), data=str(folder),
                        out=str(tmp_path / "eval"), context=2, horizon=9, trajectories=2,
                        sampling=FARSamplingConfig(steps=1),
                        i3d=str(weights / "i3d.pt"), perceptual=PerceptualConfig(net="alex", search=[str(weights)]))
    # 3 videos make a covariance too degenerate for sqrtm (tested in test_metrics); the mean term checks the
    # plumbing: which frames, which features, one distance per trajectory, averaged
    mean_distance = lambda a, b: float(np.square(a.mean(0) - b.mean(0)).sum())
    monkeypatch.setattr("nbp.eval.far.frechet_distance", mean_distance)
    result = evaluate_far(cfg)

    pipeline = FARPipeline(load_dcae(official_files["dcae"]), load_far(official_files["action"]))
    lpips, i3d = load_perceptual(cfg.perceptual), load_i3d(weights / "i3d.pt")
    as_video = lambda x: torch.from_numpy(x).permute(3, 0, 1, 2)[None].float() / 255
    best_lpips, real, fake = [], [], [[], []]
    for index in range(videos):
        episode = np.load(folder / f"ep_{index}.npz")
        continuations = trajectories(cfg, pipeline, episode["video"], episode["actions"], index)
        with torch.no_grad():
            best_lpips.append(min(float(lpips.video(as_video(v[2:]), as_video(episode["video"][2:])))
                                  for v in continuations))
        real.append(episode["video"][2:])
        for n, video in enumerate(continuations):
            fake[n].append(video[2:])
    assert result["predicted"]["lpips"] == pytest.approx(np.mean(best_lpips), rel=1e-5)
    features = lambda clips: i3d_features(i3d, np.stack(clips), progress=False)
    expected_fvd = np.mean([mean_distance(features(real), features(f)) for f in fake])
    assert result["predicted"]["fvd"] == pytest.approx(expected_fvd, rel=1e-4)


def test_balanced_subset_takes_the_same_count_of_every_class():
    from nbp.eval.far_generation import balanced_subset

    labels = [0] * 5 + [1] * 7 + [2] * 4
    subset = balanced_subset(labels, 10, np.random.default_rng(0))  # ceil(10 / 3) = 4 per class, then the first 10
    assert len(subset) == len(set(subset)) == 10
    counts = np.bincount([labels[i] for i in subset], minlength=3)
    assert counts.max() <= 4 and counts.sum() == 10
    full = balanced_subset(labels, 12, np.random.default_rng(0))
    assert np.bincount([labels[i] for i in full]).tolist() == [4, 4, 4]
    assert subset != balanced_subset(labels, 10, np.random.default_rng(2))
    with pytest.raises(ConfigError, match="class 2 has 4 videos"):
        balanced_subset(labels, 15, np.random.default_rng(0))


def test_far_gen_eval_scores_each_seed_on_its_own_balanced_subset(official_files, tmp_path, monkeypatch):
    from nbp.data.synthetic import make_dataset
    from nbp.data.video import read_frames
    from nbp.eval import far_generation
    from nbp.metrics import InceptionI3d

    root = make_dataset(tmp_path / "videos", videos_per_class=2, size=64, frames=(24, 30))
    torch.save(det_state_dict([(k, list(v.shape)) for k, v in InceptionI3d(400).state_dict().items()], 3, 2.0),
               tmp_path / "i3d.pt")
    seen = []
    real_clips, generated_clips = far_generation.real_clips, far_generation.generated_clips
    monkeypatch.setattr(far_generation, "real_clips", lambda d, i, c: seen.append(("real", d, i)) or real_clips(d, i, c))
    monkeypatch.setattr(far_generation, "generated_clips",
                        lambda p, labels, c, s: seen.append(("fake", labels)) or generated_clips(p, labels, c, s))
    monkeypatch.setattr(far_generation, "frechet_distance", lambda a, b: float(np.square(a.mean(0) - b.mean(0)).sum()))
    cfg = far_generation.FARGenerationEvalConfig(
        far=str(official_files["label"]), dcae=str(official_files["dcae"]), i3d=str(tmp_path / "i3d.pt"),
        clips=ClipConfig(root=str(root), resolution=64, resize="crop", short="pad"), out=str(tmp_path / "out"),
        videos=4, frames=9, frame_interval=2, seeds=[0, 2], sampling=FARSamplingConfig(steps=1),
        batch_size=3)
    result = far_generation.evaluate_far_generation(cfg)
    assert list(result["fvd"]) == ["0", "2"] and all(v > 0 for v in result["fvd"].values())
    assert result["fvd_mean"] == pytest.approx(np.mean(list(result["fvd"].values())))
    assert result["fvd_std"] == pytest.approx(np.std(list(result["fvd"].values()), ddof=1))
    (_, dataset, first), (_, labels), (_, _, second), _ = seen
    assert labels == [dataset.class_to_index[dataset.entries[i].class_name] for i in first]  # the subset's labels
    assert first != second  # each seed draws its own subset
    clip = far_generation.real_clips(dataset, first[:1], cfg)[0]
    np.testing.assert_array_equal(clip, read_frames(dataset.entries[first[0]].path, list(range(0, 18, 2)), 64, "crop"))
    assert (tmp_path / "out" / "samples_seed_2.png").is_file()
