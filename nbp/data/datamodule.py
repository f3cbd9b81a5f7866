"""The training data of a tokenizer run: `DataConfig`, which lives with the other data settings in
`nbp.settings.data` (torch-free, for the command line) and is importable from here as before."""
from nbp.settings.data import DataConfig as DataConfig
