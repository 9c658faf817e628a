from cifar_shared.testing.fault_suite import *  # noqa: F403  (the shared fault-injection tests, on this package's model)
