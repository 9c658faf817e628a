"""cifar-perceiver: a Perceiver with Fourier features (perceiver-pytorch) on the shared training core."""
