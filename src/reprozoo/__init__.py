"""reprozoo: reproduce published deep-learning baselines with verdicts."""
