"""Generation as functions over the models: token models block by block (`generate`), world models frame by
frame (`predict_frames`), and the samplers they share."""
from nbp.generation.frames import predict_frames
from nbp.generation.sampling import SamplingConfig
from nbp.generation.tokens import generate

__all__ = ["generate", "predict_frames", "SamplingConfig"]
