"""Training engine on pytorch-lightning: module, metrics, schedulers, callbacks, trainer, CLI."""
