"""nbp: autoregressive video generation by blocks.

Rooms by role: `models` (modules only), `generation` (decoding as functions over the models), `pipelines` (a
tokenizer composed with a model: video in, video out), `data` (every dataset and the jobs that extract tokens),
`training` (Lightning systems and the shared run config), `eval` (evaluation jobs), `metrics`, `checkpoint`
(model files in and out), `io` (files written safely, and what people look at). `cli` is the command table,
`config` the typed configs with presets.
"""

__version__ = "0.2.0"
