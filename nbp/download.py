"""The loaders under the official NBP code's module name: `from nbp.download import load_magvit2` keeps working;
FAR's models load from here too."""
from nbp.checkpoint.far import load_dcae, load_far
from nbp.checkpoint.official import load_magvit2, load_transformer

__all__ = ["load_dcae", "load_far", "load_magvit2", "load_transformer"]
