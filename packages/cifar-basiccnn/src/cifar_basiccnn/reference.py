"""The yardstick for ``basiccnn-train``: the original project's plain-PyTorch loop, nothing shared.

torchvision transforms on PIL images in a DataLoader, Adam, ReduceLROnPlateau on the validation
loss, the same model and seed. ``basiccnn-train`` must learn at least as well on the same data::

    uv run python -m cifar_basiccnn.reference --root ../shared/data/cifar10-subset --epochs 15
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cifar_basiccnn.model import BasicCNN
from cifar_shared.bench.loader import MEAN, STD, TextbookCIFAR
from cifar_shared.data.sources import load_cifar, split_train_val


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return loss / count, correct / count


def main(argv: list[str] | None = None) -> None:
    import torchvision.transforms as T

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="0: train on all images and select the epoch on the test set (the original project's protocol)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    train_set, test_set = load_cifar("cifar10", args.root, download=False)
    if args.val_fraction > 0:
        train_set, val_set = split_train_val(train_set, args.val_fraction, args.seed)
    else:
        val_set = test_set
    augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    plain = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    train_loader = DataLoader(TextbookCIFAR(train_set, augment), batch_size=128, shuffle=True, num_workers=args.workers)
    val_loader = DataLoader(TextbookCIFAR(val_set, plain), batch_size=256)
    test_loader = DataLoader(TextbookCIFAR(test_set, plain), batch_size=256)

    model = BasicCNN(num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    best_acc, best_state = -1.0, None
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        val_loss, val_acc = evaluate(model, val_loader)
        scheduler.step(val_loss)
        if val_acc > best_acc:
            best_acc, best_state = val_acc, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {epoch + 1}/{args.epochs}  val loss {val_loss:.4f} acc {val_acc:.4f}", flush=True)
    model.load_state_dict(best_state)
    test_loss, test_acc = evaluate(model, test_loader)
    print(f"test (best val epoch): acc {test_acc:.4f}  loss {test_loss:.4f}")


if __name__ == "__main__":
    main()
