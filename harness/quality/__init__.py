"""Quality tasks and their scoring, run on the same loaded weights that were timed."""
