"""Learning by colorization: clips of unlabeled video and the training loop."""
