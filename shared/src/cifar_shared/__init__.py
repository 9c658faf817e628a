"""Shared core of the CIFAR training monorepo: data, augmentation, engine and config plumbing."""

from cifar_shared.errors import UserError

__all__ = ["UserError"]
