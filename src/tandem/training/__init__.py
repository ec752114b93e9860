"""Training: the local PyTorch trainer, its checkpoints and plots."""
