"""Pipelines compose a tokenizer with a model, video in and video out; `sample` is the `nbp sample` job."""
from nbp.pipelines.video import NBPPipeline, VideoOutput, WorldPipeline

__all__ = ["NBPPipeline", "VideoOutput", "WorldPipeline"]
