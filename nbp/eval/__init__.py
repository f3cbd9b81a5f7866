"""Evaluation jobs: FVD under named protocols (`fvd`), tokenizer reconstruction (`tokenizer`), continuation of
held-out clips (`prediction`) and world-model rollouts over the horizon (`world`)."""
