from cifar_shared.testing_faults import *  # noqa: F403  (every installed model package; none in the shared nox session)
