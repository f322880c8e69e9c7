"""Running a compiled model on this machine: the host runtime and perplexity."""
