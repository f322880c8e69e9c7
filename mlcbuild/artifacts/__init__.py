"""What the pipeline writes: compiled libraries, converted weights, the content-addressed cache (local and remote), ABI stamps, tuning records."""
