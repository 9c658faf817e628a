from cifar_shared.testing.gpu_suite import *  # noqa: F403  (the shared GPU tests, on this package's model; skipped without a GPU)
