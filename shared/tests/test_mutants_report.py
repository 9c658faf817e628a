"""cifar-report's reading of run folders, on hand-made folders (no training): each row's fields, the
mean ± sd rows, the sweep-folder order and the mistakes. Written to kill the mutants of
cifar_shared.runs.report (``uvx nox -s mutants``, docs/testing.md); the real commands on a real
run are in packages/cifar-basiccnn/tests/test_run_tools.py."""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cifar_shared import UserError
from cifar_shared.runs.report import (
    _num,
    _time,
    describe,
    model_stats,
    report,
    report_main,
    run_folders,
    sweep_key,
    table,
    wall_time,
)

MODEL_INFO = """basiccnn: 3 conv blocks, 10 classes
620,362 parameters (620,362 trainable); FLOPs per image: forward 12.345 M, forward+backward 37.035 M
==========================================================================================
Layer (type:depth-idx)                   Input Shape               Output Shape              Param #
==========================================================================================
Total params: 620,362
Trainable params: 620,362
"""


def make_run(folder: Path, *, seed=0, acc=0.5, f1=0.4, epochs=3, history=None, log=None, info=MODEL_INFO, **cfg) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"package": "nosuchpackage.conf", "seed": seed, "epochs": epochs, "lr": 0.1,
              "data": {"name": "cifar10", "root": "/data/cifar-10", "split_seed": seed},
              "output_dir": str(folder), "checkpoint_dir": str(folder / "checkpoints"), **cfg}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if history is None:
        history = [{"epoch": e, "val/acc": 0.1 * e, "time_s": 10.0} for e in range(1, 3)]
    test = {} if acc is None else {"acc": acc, "f1_macro": f1}
    (folder / "metrics.json").write_text(json.dumps({"history": history, "test": test}))
    if info is not None:
        (folder / "model_info.txt").write_text(info)
    if log is not None:
        (folder / "train.log").write_text(log)
    return folder


def test_run_folders_takes_runs_as_given_and_sweeps_in_number_order(tmp_path):
    one = make_run(tmp_path / "single")
    sweep = tmp_path / "sweep"
    for name in ("10", "2", "b", "a", "0"):
        make_run(sweep / name)
    (sweep / "3").mkdir()  # no config.yaml: not a run
    (sweep / "notes.txt").write_text("x")
    names = [p.name for p in run_folders([str(one), str(sweep)])]
    assert names == ["single", "0", "2", "10", "a", "b"]


def test_run_folders_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match=r"^\S*nope does not exist: pass run folders or sweep folders \(holding 0/, 1/, \.\.\.\)$"):
        run_folders([str(tmp_path / "nope")])
    (tmp_path / "empty" / "0").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^\S*empty holds no run folder \(no config.yaml in it or its subfolders\): pass a training run's output_dir$"):
        run_folders([str(tmp_path / "empty")])


def test_model_stats_reads_parameters_and_forward_flops(tmp_path):
    run = make_run(tmp_path / "r")
    assert model_stats(run) == ("620,362", "12.345 M")
    (run / "model_info.txt").write_text("header\nsomething else\n")
    assert model_stats(run) == ("-", "-")
    (run / "model_info.txt").write_text("header\n  Total params: 5\nFLOPs per image: forward 2.500 G, forward+backward 7.5 G\n")
    assert model_stats(run) == ("-", "2.500 G")  # "Total params" counts only at a line's start
    (run / "model_info.txt").unlink()
    assert model_stats(run) == ("-", "-")


def test_wall_time_is_first_to_last_log_line_else_the_epochs_times(tmp_path):
    log = ("2024-03-01 10:00:00,250 INFO start\n"
           "  a traceback line without a time stamp\n"
           "2024-03-01 10:01:00,000 INFO epoch 1\n"
           "2024-03-01 10:02:30,750 INFO done\n")
    run = make_run(tmp_path / "r", log=log)
    assert wall_time(run, []) == pytest.approx(150.5)
    (run / "train.log").write_text("2024-03-01 10:00:00,000 INFO only one line\n")
    history = [{"time_s": 2.5}, {"time_s": None}, {"epoch": 3}, {"time_s": 4.0}]
    assert wall_time(run, history) == pytest.approx(6.5)
    (run / "train.log").unlink()
    assert wall_time(run, history) == pytest.approx(6.5)
    assert wall_time(run, [{"epoch": 1}]) is None
    assert wall_time(run, [{"time_s": 0.0}]) == 0.0


def test_sweep_key_ignores_seeds_and_paths_inside_the_run_only(tmp_path):
    def key(folder, **cfg):
        base = {"seed": 0, "lr": 0.1, "name": "a", "output_dir": f"/runs/{folder}",
                "checkpoint_dir": f"/runs/{folder}/checkpoints", "data": {"split_seed": 0, "root": "/data"},
                "layers": [{"seed": 1, "width": 8}]}
        return sweep_key(OmegaConf.create({**base, **cfg}))

    same = key("0")
    assert key("1", seed=5, data={"split_seed": 3, "root": "/data"}, layers=[{"seed": 9, "width": 8}]) == same
    assert key("0", lr=0.2) != same
    assert key("0", name="b") != same
    assert key("0", data={"split_seed": 0, "root": "/elsewhere"}) != same
    assert key("0", layers=[{"seed": 1, "width": 16}]) != same
    assert key("0", extra="/runs/0/plots") == key("1", extra="/runs/1/plots")  # inside each run's own folder
    assert key("0", extra="/shared/plots") != key("1", extra="/shared/other")
    # without an output_dir, every string value counts
    assert sweep_key(OmegaConf.create({"name": "a"})) != sweep_key(OmegaConf.create({"name": "b"}))
    # interpolations are compared as written
    assert sweep_key(OmegaConf.create({"lr": 0.1, "x": "${lr}"})) != sweep_key(OmegaConf.create({"lr": 0.1, "x": 0.1}))


def test_describe_reads_one_row(tmp_path):
    history = [{"epoch": 1, "time_s": 3.0}, {"epoch": 2, "time_s": 4.0}]
    run = make_run(tmp_path / "r", acc=0.75, f1=0.625, epochs=5, history=history)
    row = describe(run)
    assert row == {"path": run, "package": "nosuchpackage.conf", "same_as": row["same_as"], "data": "cifar10 (cifar-10)",
                   "epochs": "2/5", "acc": 0.75, "f1": 0.625, "parameters": "620,362", "flops": "12.345 M",
                   "wall": pytest.approx(7.0), "history": history}
    assert row["same_as"] == sweep_key(OmegaConf.load(run / "config.yaml"))


def test_describe_fills_what_a_run_did_not_record(tmp_path):
    run = make_run(tmp_path / "r", acc=None, history=[], info=None)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("package", "epochs", "data"):
        del cfg[key]
    cfg["name"] = "resnet"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").write_text(json.dumps({"test": None}))
    row = describe(run)
    assert (row["package"], row["data"], row["epochs"]) == ("resnet", "?", "0/?")
    assert (row["acc"], row["f1"], row["parameters"], row["flops"], row["wall"], row["history"]) == (None, None, "-", "-", None, [])
    (run / "metrics.json").unlink()
    assert describe(run)["history"] == []
    cfg.pop("name")
    cfg["data"] = {"name": "synthetic", "root": "/tmp/x"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    row = describe(run)
    assert (row["package"], row["data"]) == ("?", "synthetic")
    cfg["data"] = {"name": "cifar100"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert describe(run)["data"] == "cifar100"


def test_numbers_and_times_as_the_table_writes_them():
    assert _num(None) == "-" and _num(0.5) == "0.5000" and _num(0.123456) == "0.1235" and _num(0.0) == "0.0000"
    assert _time(None) == "-" and _time(0.0) == "0 s" and _time(59.4) == "59 s" and _time(119.6) == "120 s"
    assert _time(120) == "2.0 min" and _time(600) == "10.0 min" and _time(5400) == "90.0 min"


def _row(path, acc, f1, group="g", package="basiccnn", data="cifar10", epochs="3/3", wall=30.0):
    return {"path": path, "package": package, "same_as": group, "data": data, "epochs": epochs, "acc": acc, "f1": f1,
            "parameters": "1,000", "flops": "1.000 M", "wall": wall, "history": []}


def test_table_rows_and_one_mean_row_per_group_of_repeats():
    rows = [_row("s/0", 0.5, 0.4), _row("s/1", 0.6, 0.5, wall=200.0), _row("s/2", 0.7, 0.6, wall=None),
            _row("x", 0.9, 0.8, group="h", package="resnet", data="cifar100", epochs="1/2"),
            _row("y", 0.3, 0.2, group="k"), _row("z", None, None, group="k")]
    sd = statistics.stdev([0.5, 0.6, 0.7])
    assert table(rows) == (
        "| run | package | data | epochs | test acc | macro F1 | parameters | FLOPs | wall time |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| s/0 | basiccnn | cifar10 | 3/3 | 0.5000 | 0.4000 | 1,000 | 1.000 M | 30 s |\n"
        "| s/1 | basiccnn | cifar10 | 3/3 | 0.6000 | 0.5000 | 1,000 | 1.000 M | 3.3 min |\n"
        "| s/2 | basiccnn | cifar10 | 3/3 | 0.7000 | 0.6000 | 1,000 | 1.000 M | - |\n"
        "| x | resnet | cifar100 | 1/2 | 0.9000 | 0.8000 | 1,000 | 1.000 M | 30 s |\n"
        "| y | basiccnn | cifar10 | 3/3 | 0.3000 | 0.2000 | 1,000 | 1.000 M | 30 s |\n"
        "| z | basiccnn | cifar10 | 3/3 | - | - | 1,000 | 1.000 M | 30 s |\n"
        f"| mean ± sd of 3 like s/0 | basiccnn | cifar10 | 3/3 | 0.6000 ± {sd:.4f} | 0.5000 ± {sd:.4f} | | | |\n"
    )
    assert table([]) == "| run | package | data | epochs | test acc | macro F1 | parameters | FLOPs | wall time |\n|---|---|---|---|---|---|---|---|---|\n"


def test_mean_row_of_two_repeats_takes_the_first_members_columns():
    rows = [_row("a", 0.2, 0.1, epochs="2/3"), _row("b", 0.4, 0.5, epochs="3/3", data="other")]
    last = table(rows).splitlines()[-1]
    assert last == (f"| mean ± sd of 2 like a | basiccnn | cifar10 | 2/3 | 0.3000 ± {statistics.stdev([0.2, 0.4]):.4f} | "
                    f"0.3000 ± {statistics.stdev([0.1, 0.5]):.4f} | | | |")


def test_two_sweeps_mean_rows_say_which_runs_they_average():
    """Two pipelines x seeds, sorted by path: the groups interleave, so each mean row names its first run."""
    rows = [_row("per_sample_s0", 0.2, 0.1, group="p"), _row("per_sample_s1", 0.4, 0.3, group="p"),
            _row("tensor_s0", 0.5, 0.4, group="t"), _row("tensor_s1", 0.7, 0.6, group="t")]
    means = [line.split(" | ")[0] for line in table(rows).splitlines()[-2:]]
    assert means == ["| mean ± sd of 2 like per_sample_s0", "| mean ± sd of 2 like tensor_s0"]


def test_a_group_with_one_macro_f1_still_gets_its_accuracy_spread():
    """Runs from before macro-F1 was recorded: two accuracies, one F1 (statistics.stdev raised)."""
    rows = [_row("a", 0.2, 0.1), _row("b", 0.4, None)]
    assert table(rows).splitlines()[-1] == f"| mean ± sd of 2 like a | basiccnn | cifar10 | 3/3 | 0.3000 ± {statistics.stdev([0.2, 0.4]):.4f} | - | | | |"


def test_report_writes_the_table_and_the_figure_beside_it(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate((0.5, 0.7)):
        make_run(sweep / str(seed), seed=seed, acc=acc, f1=acc - 0.1)
    text, md, png = report([str(sweep)], tmp_path / "out" / "report.md")
    assert md == tmp_path / "out" / "report.md" and png == tmp_path / "out" / "report.png"
    assert md.read_text() == text and png.stat().st_size > 1000
    assert text.count("\n") == 5 and f"| mean ± sd of 2 like {sweep / '0'} | nosuchpackage.conf | cifar10 (cifar-10) | 2/3 | 0.6000 ± 0.1414 |" in text
    assert f"| {sweep / '0'} | " in text and f"| {sweep / '1'} | " in text


def test_report_refuses_an_unwritable_figure_path_in_one_line(tmp_path):
    run = make_run(tmp_path / "r")
    (tmp_path / "out.png").symlink_to(tmp_path / "missing" / "out.png")  # savefig cannot open it
    with pytest.raises(UserError, match=r"^cannot write \S*out\.png \(No such file or directory\): give --out a writable path$"):
        report([str(run)], tmp_path / "out.md")


def test_report_main_prints_the_table_and_both_paths(tmp_path, capsys):
    run = make_run(tmp_path / "r")
    report_main([str(run), "--out", str(tmp_path / "t.md")])
    out = capsys.readouterr().out
    text = (tmp_path / "t.md").read_text()
    assert out == f"{text}\n{tmp_path / 't.md'}\n{tmp_path / 't.png'}\n"


def test_report_main_default_out_and_mistakes(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    report_main([str(run)])
    assert (tmp_path / "cifar-report.md").is_file() and (tmp_path / "cifar-report.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path / "nope")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'} does not exist: pass run folders or sweep folders (holding 0/, 1/, ...)\n"
    with pytest.raises(SystemExit) as exit_:
        report_main([])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: the following arguments are required: runs: see cifar-report --help")


def test_wall_time_from_a_log_of_two_lines(tmp_path):
    run = make_run(tmp_path / "r", log="2024-03-01 10:00:00,000 INFO start\n2024-03-01 10:00:42,500 INFO done\n")
    assert wall_time(run, [{"time_s": 1.0}]) == pytest.approx(42.5)


def test_a_single_run_before_a_sweep_still_leaves_the_sweeps_mean_row():
    rows = [_row("alone", 0.9, 0.8, group="solo"), _row("s/0", 0.5, 0.4), _row("s/1", 0.7, 0.6)]
    assert table(rows).splitlines()[-1].startswith("| mean ± sd of 2 like s/0 | basiccnn | cifar10 | 3/3 | 0.6000 ± ")


def test_sweep_key_without_an_output_dir_strips_no_path():
    a = OmegaConf.create({"name": "None-a", "path": "None/x"})
    b = OmegaConf.create({"name": "None-b", "path": "None/y"})
    assert sweep_key(a) != sweep_key(b)


def test_report_refuses_out_paths_naming_the_option_and_an_example(tmp_path):
    run = make_run(tmp_path / "r")
    folder = tmp_path / "folder.md"
    folder.mkdir()
    with pytest.raises(UserError) as error:
        report([str(run)], folder)
    assert str(error.value) == f"--out {folder} is a folder: give a file path, e.g. --out {folder / 'report.md'}"
    (tmp_path / "t.png").mkdir()  # the figure's path beside the table
    with pytest.raises(UserError) as error:
        report([str(run)], tmp_path / "t.md")
    assert str(error.value) == f"--out {tmp_path / 't.png'} is a folder: give a file path, e.g. --out {tmp_path / 't.png' / 'report.md'}"


def test_report_help_says_what_it_does(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit) as exit_:
        report_main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: cifar-report [-h] [--out OUT] runs [runs ...]\n")
    assert "\nMarkdown table and validation-curve figure over run folders and sweep folders.\n" in out
    assert "  runs        run folders, or sweep folders holding 0/, 1/, ...\n" in out
    assert "  --out OUT   markdown file (default cifar-report.md); the figure goes beside it as .png\n" in out
