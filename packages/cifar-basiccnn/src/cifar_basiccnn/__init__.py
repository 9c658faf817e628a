"""cifar-basiccnn: a plain 3-conv CNN on the shared training core."""
