"""The loaders under the official NBP code's module name: `from nbp.download import load_magvit2` keeps working."""
from nbp.checkpoint.official import load_magvit2, load_transformer

__all__ = ["load_magvit2", "load_transformer"]
