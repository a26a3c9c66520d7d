"""Models: DINO training, exported feature extractors, attribute probes."""
