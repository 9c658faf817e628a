"""cifar-qvit: 4-bit quantization-aware training of a Hugging Face ViT (Q-ViT) on the shared core."""
