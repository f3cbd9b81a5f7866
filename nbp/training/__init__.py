"""Training: Lightning systems (losses and optimizers) and the runner shared by the tokenizer and the LM."""
