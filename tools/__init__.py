"""Developer commands: launcher, benchmarks, evaluation, reference recording."""
