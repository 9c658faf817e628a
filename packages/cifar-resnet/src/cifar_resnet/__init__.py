"""cifar-resnet: torchvision ResNet-18/34/50 with a CIFAR stem, on the shared training core."""
