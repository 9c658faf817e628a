"""The workflow through the shared engine: FP run -> QAT from it (DGD teacher) -> export."""

import json
import re

import pytest
import torch

from cifar_qvit.cli import train_qvit as train
from cifar_shared import UserError

pytestmark = pytest.mark.slow  # ViT training runs: once, on the first Python of the nox matrix


def train_losses(out) -> dict[int, float]:
    """Per-epoch training loss from train.log (metrics.json's history is restored from the best
    checkpoint by the test step, so it can stop at the best epoch: see docs/cifar-qvit.md)."""
    found = re.findall(r"epoch (\d+)/\d+ .*?train loss ([\d.]+)", (out / "train.log").read_text())
    return {int(e): float(v) for e, v in found}


def test_fp_run_learns(fp_run):
    out, test = fp_run
    losses = train_losses(out)
    assert sorted(losses) == [1, 2] and losses[2] < losses[1]
    assert test["acc"] > 0.2  # 10 classes: chance is 0.1
    assert "quantized" not in (out / "train.log").read_text()


@pytest.fixture(scope="module")
def qat_run(fp_run, tmp_path_factory, small_config):
    fp, _ = fp_run
    out = tmp_path_factory.mktemp("qat")
    return out, train(small_config(out, f"model.init_from={fp}", "loss_hook=dgd", "loss_hook.kd_weight=1.0"))


def test_qat_starts_from_the_fp_run_and_distills(fp_run, qat_run):
    fp, _ = fp_run
    out, test = qat_run
    log = (out / "train.log").read_text()
    assert f"weights from {fp}" in log and "quantized 26 layers (4 blocks x 6 + patch embedding + classifier = 26)" in log
    row = json.loads((out / "metrics.json").read_text())["history"][0]
    assert row["train/loss_dgd"] > 0 and row["train/loss_kd"] > 0  # a 4-bit student is not its float teacher
    assert test["acc"] > 0.2
    state = torch.load(next((out / "checkpoints").glob("best-*.ckpt")), weights_only=True)["state_dict"]
    fp_state = torch.load(next((fp / "checkpoints").glob("best-*.ckpt")), weights_only=True)["state_dict"]
    assert not any("loss_hook" in k or "teacher" in k for k in state)  # the teacher lives in the FP run
    assert set(fp_state) < set(state)  # the same float weights plus the quantizers' parameters


def test_qat_runs_kd_term_is_the_kl_from_its_fp_teacher(fp_run, qat_run):
    """The run's loss hook, built from its config.yaml as training built it, distills from the FP run
    at the configured temperature: kd_weight x T^2 x KL(teacher || student) of the softmaxes at T,
    here written out against the two finished runs' networks; zero when the student is the teacher."""
    from types import SimpleNamespace

    from hydra.utils import instantiate

    from cifar_qvit.export import load_run

    fp, _ = fp_run
    out, _ = qat_run
    student, cfg = load_run(out)
    teacher, _ = load_run(fp)
    hook_cfg = cfg["loss_hook"]
    assert hook_cfg["teacher_run"] == str(fp) and hook_cfg["kd_weight"] == 1.0
    hook = instantiate(hook_cfg)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    student.capture_qk = teacher.capture_qk = True  # eval mode (no dropout), queries/keys captured for the DGD term
    with torch.no_grad():
        logits, teacher_logits = student(x), teacher(x)
        kd = hook(SimpleNamespace(net=student), x, None, logits)["kd"].item()  # what the engine passes: .net is the student
        same = hook(SimpleNamespace(net=teacher), x, None, teacher(x))["kd"].item()
    t = hook_cfg["kd_temperature"]
    log_p, log_q = (torch.log_softmax(z.double() / t, -1) for z in (teacher_logits, logits))
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()
    assert kl > 0 and kd == pytest.approx(hook_cfg["kd_weight"] * t * t * kl, rel=1e-3)
    assert same == pytest.approx(0.0, abs=1e-6)


def test_qat_resumes_with_the_teacher_rebuilt(fp_run, qat_run, small_config):
    fp, _ = fp_run
    out, _ = qat_run
    train(small_config(out, f"model.init_from={fp}", "loss_hook=dgd", "loss_hook.kd_weight=1.0", "epochs=2"))
    assert sorted(train_losses(out)) == [1, 2]
    assert "resuming from" in (out / "train.log").read_text()


def test_export_reloads_to_identical_predictions(qat_run, capsys):
    from cifar_qvit.export import export_run, load_export, load_run

    out, _ = qat_run
    path = export_run(out, check=True)
    printed = capsys.readouterr().out
    assert "64/64 predictions of the reloaded export equal" in printed and "x smaller" in printed
    net, _ = load_run(out)
    again = load_export(path)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
    assert path.stat().st_size < sum(p.numel() for p in net.parameters()) * 4 / 3


def test_export_of_a_checkpoint_from_another_package_version_is_one_line(qat_run, tmp_path):
    """A run trained before q/k/v shared one input quantizer holds q_proj.aq.* keys instead."""
    import shutil

    from cifar_qvit.export import load_run
    from cifar_shared.runs.folder import RunFolder

    out, _ = qat_run
    old = tmp_path / "old-run"
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("export"))
    path = RunFolder.open(old).checkpoint()
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {k.replace("qvit.qkv_input.", "q_proj.aq."): v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)
    with pytest.raises(UserError, match=r"does not fit this cifar-qvit's model \(e.g. .*qkv_input.*\): it was saved by another version"):
        load_run(old)


def test_generic_export_of_a_qvit_run_is_one_line_and_leaves_nothing(qat_run, tmp_path):
    from cifar_shared.runs.export import export_model

    out, _ = qat_run
    with pytest.raises(UserError, match=r"does not export qvit networks .*: use qvit-export RUN_DIR") as e:
        export_model(out, "torchscript")
    assert "\n" not in str(e.value) and not (out / "export" / "model.pt").exists() and not (out / "export" / "model.pt.tmp").exists()


def test_qvit_export_file_respects_the_umask(qat_run, tmp_path):
    import os

    from cifar_qvit.export import export_run

    out, _ = qat_run
    mask = os.umask(0o022)
    try:
        path = export_run(out, tmp_path / "m.safetensors")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644 and not list(tmp_path.glob(".*"))


def test_init_from_a_crafted_checkpoint_runs_nothing(fp_run, tmp_path, small_config):
    import shutil

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    fp, _ = fp_run
    teacher = tmp_path / "teacher"
    shutil.copytree(fp, teacher)
    for ckpt in (teacher / "checkpoints").glob("*.ckpt"):
        torch.save({"state_dict": {"net.hf.x": Payload()}}, ckpt)
    from cifar_qvit.distill import DGDLoss

    with pytest.raises(UserError, match="refers to io.open, which loading would call"):
        train(small_config(tmp_path / "run", f"model.init_from={teacher}"))
    with pytest.raises(UserError, match="refers to io.open, which loading would call"):
        DGDLoss(str(teacher))  # the teacher of a run whose student starts elsewhere
    assert not (tmp_path / "marker").exists()


def test_dgd_without_a_teacher_run_is_a_user_error(tmp_path, small_config):
    with pytest.raises(UserError, match="loss_hook=dgd needs a teacher: set model.init_from"):
        train(small_config(tmp_path, "loss_hook=dgd"))
    with pytest.raises(UserError, match=r"model.init_from=.*has no config.yaml"):
        train(small_config(tmp_path / "b", f"model.init_from={tmp_path}"))


def test_init_from_a_run_with_another_class_count(fp_run, tmp_path, small_config):
    fp, _ = fp_run
    with pytest.raises(UserError, match="10-class head but the data has 5 classes"):
        train(small_config(tmp_path, f"model.init_from={fp}", "data.num_classes=5"))


def test_save_pretrained_vit_with_1000_classes_trains_head_replaced(tmp_path, small_config):
    from transformers import ViTConfig, ViTForImageClassification

    from cifar_qvit.model import SIZES

    ViTForImageClassification(ViTConfig(**{**SIZES["tiny"], "num_hidden_layers": 2}, num_labels=1000)).save_pretrained(tmp_path / "vit")
    out = tmp_path / "run"
    test = train(small_config(out, f"model.pretrained={tmp_path / 'vit'}", "bits=qvit"))
    log = (out / "train.log").read_text()
    line = next(ln for ln in log.splitlines() if "quantized " in ln)
    assert "quantized 14 layers (2 blocks x 6 + patch embedding + classifier = 14)" in line
    assert line.count("[") == 14 and "classifier[classifier W8A8]" in line and "projection[patch_embed W8A8]" in line
    state = torch.load(next((out / "checkpoints").glob("best-*.ckpt")), weights_only=True)["state_dict"]
    assert state["net.hf.classifier.weight"].shape[0] == 10 and 0 <= test["acc"] <= 1


def test_pretrained_1000_class_vit_fine_tunes_on_cifar100_with_a_100_class_head(tmp_path, small_config, cifar100_root):
    """The original's setting: a 1000-class pretrained ViT becomes a 100-class model on CIFAR-100
    (the default data), normalizing with the statistics it was pretrained with, not CIFAR-100's."""
    import json

    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from cifar_qvit.model import SIZES

    vit = tmp_path / "vit"
    ViTForImageClassification(ViTConfig(**{**SIZES["tiny"], "num_hidden_layers": 1}, num_labels=1000)).save_pretrained(vit)
    ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(vit)
    out = tmp_path / "run"
    test = train(small_config(out, f"model.pretrained={vit}", data=[f"data.root={cifar100_root}", "data.download=false"]))
    state = torch.load(next((out / "checkpoints").glob("best-*.ckpt")), weights_only=True)["state_dict"]
    assert state["net.hf.classifier.weight"].shape == (100, 128)
    matrix = test["confusion_matrix"]
    assert len(matrix) == 100 and all(len(row) == 100 for row in matrix) and sum(map(sum, matrix)) == 200
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"]["mean"] == [0.5, 0.5, 0.5] and metrics["input"]["std"] == [0.5, 0.5, 0.5]
    assert len(metrics["classes"]) == 100


def test_tiny_vit_learns_real_cifar100_well_beyond_chance(tmp_path, small_config):
    """experiment=subset100 shortened to 3 epochs: the CIFAR-100 path learns on real images
    (chance is 0.01; the full recipe's figure is in docs/cifar-qvit.md)."""
    from cifar_shared.testing import real_subset_or_skip

    root = real_subset_or_skip("cifar100-subset")
    test = train(small_config(tmp_path, "experiment=subset100", "epochs=3", "batch_size=128", "scheduler.warmup_epochs=0.3",
                              data=[f"data.root={root}"]))
    assert test["acc"] >= 0.03, test["acc"]
