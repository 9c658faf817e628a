"""debugcnn-bench: prints both ratios from one run; bad overrides are one line."""

import logging
import re

import pytest

from cifar_debugcnn.bench import main


def test_bench_prints_the_step_ratios_of_one_interleaved_run(capsys):
    levels = [logging.getLogger(name).level for name in ("cifar_debugcnn", "cifar_shared.run")]
    main(["--epochs", "4", "data.train_size=400", "data.image_size=16", "batch_size=32"])
    out = capsys.readouterr().out
    assert "epochs timed: 1 with probes, 1 without, interleaved" in out
    ratios = [float(r) for r in re.findall(r"ratio(?: from them)? (\d+\.\d+)", out)]
    assert len(ratios) == 3 and all(r > 0.5 for r in ratios), out
    # the probe tables and epoch lines of later runs in this process still log
    assert [logging.getLogger(name).level for name in ("cifar_debugcnn", "cifar_shared.run")] == levels


def test_a_bad_override_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data.no_such_key=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'data.no_such_key'") and "\n" not in err
