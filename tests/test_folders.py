"""Hugging Face-style folders: every model kind and pipeline through save_pretrained / from_pretrained (a folder and
a repo id in a local cache built here) gives equal weights and outputs; diffusers loads nbp's DC-AE folder itself."""
import shutil

import huggingface_hub
import pytest
import torch

from nbp.checkpoint import CheckpointError, load_dcae, load_far, load_magvit2, load_transformer, save_model
from nbp.cli import main
from nbp.config import from_preset
from nbp.models.dcae import DCAE, DCAEConfig
from nbp.models.far import FAR, FARConfig
from nbp.models.tokenizer import TokenizerConfig, VideoTokenizer
from nbp.models.transformer import Transformer, TransformerConfig
from nbp.models.world import WorldConfig, WorldTransformer
from nbp.pipelines import FARPipeline, NBPPipeline, WorldPipeline


def seeded(module: torch.nn.Module) -> torch.nn.Module:
    """Weights drawn from one seed, every parameter and buffer away from its initial value."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05 + (tensor == 1) * 1.0)
    return module.eval()


def tokenizer():
    return seeded(VideoTokenizer(from_preset(TokenizerConfig, "tiny-frames", fsq_levels=[8, 5, 5, 5], resolution=32)))


def lm():
    return seeded(Transformer(from_preset(TransformerConfig, "tiny", latent_shape=[3, 4, 4], video_vocab=1000,
                                          block=16, n_layer=2, n_embd=64, n_head=4)))


def world():
    return seeded(WorldTransformer(from_preset(WorldConfig, "world-tiny", latent_shape=[6, 4, 4], video_vocab=1000,
                                               block=16, n_layer=2, n_embd=64, n_head=4, short_frames=3,
                                               long_frames=2)))


def far():
    return seeded(FAR(from_preset(FARConfig, "far-tiny", condition="label", num_classes=5, sample_size=4)))


def dcae():
    return seeded(DCAE(from_preset(DCAEConfig, "dcae-tiny", resolution=32)))


def example_input(model):
    torch.manual_seed(0)
    if isinstance(model, VideoTokenizer):
        return (torch.rand(1, 3, 2, 32, 32),)
    if isinstance(model, DCAE):
        return (torch.rand(1, 3, 2, 32, 32),)
    if isinstance(model, FAR):
        return (torch.randn(1, 2, 32, 4, 4), torch.tensor([[1.0, 0.5]]), torch.tensor([2]))
    length = model.config.block * 2
    return (torch.randint(0, 1000, (1, length)),)


def outputs(model):
    with torch.no_grad():
        out = model(*example_input(model))
    return out[0] if isinstance(out, tuple) else out


def to_cache(folder, cache, repo_id):
    """The local Hugging Face cache's layout for `folder` as the main revision of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("make", [tokenizer, lm, world, far, dcae])
def test_every_model_kind_round_trips_through_a_folder_and_a_cached_repo_id(make, tmp_path, hf_cache):
    model = make()
    folder = model.save_pretrained(tmp_path / "model")
    weights = "diffusion_pytorch_model.safetensors" if isinstance(model, DCAE) else "model.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", weights])
    to_cache(folder, hf_cache, "someone/tiny-model")
    for source in (folder, "someone/tiny-model", folder / weights):
        loaded = type(model).from_pretrained(source)
        assert type(loaded) is type(model) and loaded.config == model.config
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                     strict=True))
        assert torch.equal(outputs(loaded), outputs(model))


def test_a_repo_id_missing_from_the_cache_is_one_line_naming_the_cache(hf_cache):
    with pytest.raises(FileNotFoundError, match="checkpoint someone/absent does not exist: no such file or folder, "
                                                "and no repo of that id in the local Hugging Face cache"):
        FAR.from_pretrained("someone/absent")
    with pytest.raises(CheckpointError, match="holds a 'far' model, not a 'dcae'"):
        save_model(far(), hf_cache / "far.safetensors")
        DCAE.from_pretrained(hf_cache / "far.safetensors")


def test_diffusers_loads_nbp_dcae_folder_and_nbp_loads_a_diffusers_folder(tmp_path):
    from diffusers import AutoencoderDC

    model = dcae()
    model.save_pretrained(tmp_path / "dcae")
    theirs = AutoencoderDC.from_pretrained(tmp_path / "dcae").eval()
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(theirs.encoder(frames), model.encoder(frames))
        assert torch.equal(theirs.decoder(model.encoder(frames)), model.decoder(model.encoder(frames)))
    theirs.save_pretrained(tmp_path / "diffusers_own")  # diffusers' folder: no nbp metadata in it
    back = load_dcae(tmp_path / "diffusers_own", resolution=32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True))


def test_pipelines_round_trip_and_every_loader_takes_a_pipeline_folder(tmp_path, hf_cache):
    token = NBPPipeline(tokenizer(), lm(), 32)
    token.save_pretrained(tmp_path / "nbp")
    to_cache(tmp_path / "nbp", hf_cache, "someone/nbp-tiny")
    for source in (tmp_path / "nbp", "someone/nbp-tiny"):
        loaded = NBPPipeline.from_pretrained(source)
        a, b = (p(2, None, class_ids=None, generator=torch.Generator().manual_seed(1)).videos for p in (token, loaded))
        assert torch.equal(a, b)
    assert isinstance(load_transformer(tmp_path / "nbp"), Transformer)
    assert load_magvit2(tmp_path / "nbp", resolution=32).config == token.tokenizer.config

    pipe = FARPipeline(dcae(), far())
    pipe.save_pretrained(tmp_path / "far")
    loaded = FARPipeline.from_pretrained(tmp_path / "far")
    noise = torch.randn(1, 2, 32, 4, 4)
    a, b = (p(2, None, labels=torch.tensor([1]), noise=noise, steps=2).videos for p in (pipe, loaded))
    assert torch.equal(a, b)
    assert load_far(tmp_path / "far").config == pipe.far.config
    with pytest.raises(CheckpointError, match="pipeline folder without a 'tokenizer' component"):
        load_magvit2(tmp_path / "far")
    with pytest.raises(CheckpointError, match="holds a FARPipeline, not a WorldPipeline"):
        WorldPipeline.from_pretrained(tmp_path / "far")


def test_every_command_takes_a_folder_as_a_model_argument(tmp_path):
    NBPPipeline(tokenizer(), lm(), 32).save_pretrained(tmp_path / "nbp")
    args = ["sample", f"lm={tmp_path / 'nbp'}", f"tokenizer={tmp_path / 'nbp'}", f"out={tmp_path / 'samples'}",
            "num_samples=1", "frames=3", "resolution=32", "device=cpu"]
    assert main(args) == 0
    assert (tmp_path / "samples" / "samples_uint8.npy").is_file()
