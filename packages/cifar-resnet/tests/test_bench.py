from cifar_resnet.bench import measure


def test_bench_prints_both_paths_and_their_ratio(tmp_path, capsys):
    rates = measure(["--data-root", str(tmp_path), "--batches", "3", "--batch-size", "32", "--num-workers", "0"])
    assert set(rates) == {"tensor", "per_sample"} and all(r > 0 for r in rates.values())
    out = capsys.readouterr().out
    assert "synthetic" in out and "tensor / per_sample:" in out and "albumentations" in out
