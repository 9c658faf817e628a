import pytest

from cifar_resnet.bench import measure
from cifar_shared.testing import fake_clock


def test_bench_reports_images_over_the_measured_time_and_their_ratio(tmp_path, capsys, monkeypatch):
    """resnet-bench with a fake clock: each path's rate is the timed batches' images over the time
    between its two readings (warm-up batches left out), the ratio is tensor over per_sample."""
    left = fake_clock(monkeypatch, [10.0, 11.0, 20.0, 24.0])  # tensor: 1 s, per_sample: 4 s
    rates = measure(["--data-root", str(tmp_path), "--batches", "3", "--batch-size", "32", "--num-workers", "0"])
    assert left == []
    assert rates == {"tensor": 3 * 32 / 1.0, "per_sample": 3 * 32 / 4.0}
    out = capsys.readouterr().out
    assert "synthetic" in out and "albumentations" in out
    assert " 96 img/s" in out and " 24 img/s" in out and "tensor / per_sample: 4.00x" in out


def test_bench_train_rows_and_flops(tmp_path, capsys, monkeypatch):
    """cifar-bench-train on CPU with a fake clock: every row's rate is the timed steps' images over
    its own measured time (warm-up steps untimed), FLOP/s follow from that rate, and the summary
    is the best engine row over the textbook row."""
    import json

    import cifar_shared.bench.train as bench_train

    # two readings per row (start, end of the timed steps): textbook 2 s, engine 1 s, bare loop 8 s
    left = fake_clock(monkeypatch, [0.0, 2.0, 10.0, 11.0, 20.0, 28.0])
    out = tmp_path / "bench.json"
    bench_train.main(["--package", "resnet", "--warmup", "1", "--steps", "2", "--workers", "0", "--profile", "0", "--json", str(out),
                      "--variant", "eager: compile=false channels_last=false", "data=synthetic", "data.train_size=400",
                      "batch_size=16", "model.stem=imagenet"])
    assert left == []
    figures = json.loads(out.read_text())
    timed = 2 * 16  # --steps x batch_size images in each row's timed window
    rates = {name: row["images_per_second"] for name, row in figures["rows"].items()}
    assert rates == {"textbook": timed / 2.0, "engine eager": timed / 1.0, "bare loop (eager)": timed / 8.0}
    assert figures["best_engine_over_textbook"] == pytest.approx(2.0)
    gflops = figures["train_gflops_per_image"]
    # ResNet-18 is 1.81 GMACs at 224 px (torchvision's table); at 32 px every feature map is 1/49 of
    # that: 2 x 1.81 / 49 = 0.074 GFLOPs forward; backward about twice that (no input gradient of the first conv)
    assert 0.20 < gflops < 0.23
    for name, rate in rates.items():
        assert figures["rows"][name]["achieved_tflops"] == pytest.approx(rate * gflops / 1e3)
    assert "best engine row / textbook: 2.00x" in capsys.readouterr().out


def test_bench_train_refuses_a_window_past_the_epoch_end():
    from cifar_shared.bench.train import main

    with pytest.raises(SystemExit, match="must stay below the 11 steps of one epoch"):
        main(["--package", "resnet", "--warmup", "5", "--steps", "10", "--profile", "0", "data=synthetic", "data.train_size=400",
              "batch_size=32", "model.stem=imagenet"])
