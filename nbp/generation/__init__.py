"""Generation as functions over the models: token models block by block (`generate`), world models frame by
frame (`predict_frames`), FAR models frame by frame by flow (`generate_latents`); each family's sampling settings,
and the rooms both share (guidance, decoding modes)."""
from nbp.generation.far import FARSamplingConfig, generate_latents
from nbp.generation.frames import predict_frames
from nbp.generation.sampling import SamplingConfig
from nbp.generation.tokens import generate

__all__ = ["FARSamplingConfig", "SamplingConfig", "generate", "generate_latents", "predict_frames"]
