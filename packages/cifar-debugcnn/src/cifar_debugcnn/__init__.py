"""cifar-debugcnn: a batch-normalized CNN with layer-by-layer training probes."""
