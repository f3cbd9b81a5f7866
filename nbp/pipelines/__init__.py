"""Pipelines compose a tokenizer with a model, video in and video out; `sample` is the `nbp sample` job;
`WorldSession` plays a world model one frame at a time."""
from nbp.pipelines.base import VideoOutput
from nbp.pipelines.far import FARPipeline
from nbp.pipelines.session import WorldSession
from nbp.pipelines.tokens import NBPPipeline, WorldPipeline

__all__ = ["FARPipeline", "NBPPipeline", "VideoOutput", "WorldPipeline", "WorldSession"]
