"""The training engine: config, model building, data loaders, loss, checkpoints, DDP, training, evaluation and run files."""
