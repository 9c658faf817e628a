from cifar_shared.testing_faults import *  # noqa: F403  (the shared fault-injection tests, on this package's model)
