"""The run layer: the one reader of run folders and checkpoints, and the commands that start from one
(cifar-eval, cifar-predict, cifar-export-model, cifar-report, basiccnn-visualize)."""
