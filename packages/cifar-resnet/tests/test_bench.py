import pytest

from cifar_resnet.bench import measure


def test_bench_prints_both_paths_and_their_ratio(tmp_path, capsys):
    rates = measure(["--data-root", str(tmp_path), "--batches", "3", "--batch-size", "32", "--num-workers", "0"])
    assert set(rates) == {"tensor", "per_sample"} and all(r > 0 for r in rates.values())
    out = capsys.readouterr().out
    assert "synthetic" in out and "tensor / per_sample:" in out and "albumentations" in out


def test_bench_train_rows_and_flops(tmp_path, capsys):
    """cifar-bench-train on CPU: textbook, engine and bare-loop rows; FLOP/s = images/s x FLOPs per image."""
    import json

    from cifar_shared.bench.train import main

    out = tmp_path / "bench.json"
    main(["--package", "resnet", "--warmup", "1", "--steps", "2", "--workers", "0", "--profile", "0", "--json", str(out),
          "--variant", "eager: compile=false channels_last=false", "data=synthetic", "data.train_size=400", "batch_size=16",
          "model.stem=imagenet"])
    figures = json.loads(out.read_text())
    assert set(figures["rows"]) == {"textbook", "engine eager", "bare loop (eager)"}
    for row in figures["rows"].values():
        assert row["images_per_second"] > 0
        assert row["achieved_tflops"] == pytest.approx(row["images_per_second"] * figures["train_gflops_per_image"] / 1e3)
    assert "best engine row / textbook:" in capsys.readouterr().out


def test_bench_train_refuses_a_window_past_the_epoch_end():
    from cifar_shared.bench.train import main

    with pytest.raises(SystemExit, match="must stay below the 11 steps of one epoch"):
        main(["--package", "resnet", "--warmup", "5", "--steps", "10", "--profile", "0", "data=synthetic", "data.train_size=400",
              "batch_size=32", "model.stem=imagenet"])
