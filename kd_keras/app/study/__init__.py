"""The orthogonality study: KD stacked on each technique, over seeds."""
