"""Running an experiment: every cell pretrained and measured, reports written, finished work kept
when a killed experiment resumes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from siamkit.analysis.run_eval import representation_metrics
from siamkit.errors import ConfigError
from siamkit.experiments import load_experiment, run_experiment
from siamkit.experiments import runner as runner_module

#: Two tiny digits cells: SimSiam as it is and without stop-gradient, a few steps each.
TINY = """
title: "tiny: stop-gradient"
citation: "Chen & He, arXiv:2011.10566v1"
paper_metric: "ImageNet linear top-1 (%)"
source: "Fig. 2"
about: "A test experiment."
scales:
  cpu:
    recipe: simsiam/digits
    set: [train.epochs=1, train.max_steps={steps}, optim.batch_size=64, train.seed=0]
measures:
  - {{name: knn, kind: knn, label: "kNN top-1 (%)"}}
  - {{name: collapse, kind: collapse_std}}
  - {{name: collapse_eval, kind: eval_collapse_std}}
cells:
  - {{name: with stop-gradient, paper: {{knn: 67.7}}}}
  - {{name: without stop-gradient, set: [method.stop_gradient=false], paper: {{knn: 0.1}}}}
claims:
  - text: "stop-gradient matters"
    source: "Fig. 2"
    check: {{kind: greater, cells: [with stop-gradient, without stop-gradient], measure: knn}}
  - text: "with stop-gradient the output stays spread"
    source: "Fig. 2"
    check: {{kind: healthy, cells: [with stop-gradient], threshold: 0.0}}
"""


def _experiment_file(tmp_path: Path, steps: int = 3) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(steps=steps))
    return path


def test_runs_every_cell_writes_reports_and_keeps_finished_work(tmp_path, monkeypatch):
    exp = load_experiment(str(_experiment_file(tmp_path)))
    out = tmp_path / "out"
    result = run_experiment(exp, "cpu", out, log=lambda line: None)
    assert [c.name for c in result.cells] == ["with stop-gradient", "without stop-gradient"]
    for cell in result.cells:
        assert cell.seeds == [0]  # the scale's default: one seed
        run = json.loads((Path(cell.folder) / "seed-0" / "results.json").read_text())
        # The measures are the run's own figures.
        assert cell.values["knn"] == pytest.approx([run["knn_top1"]])
        assert cell.values["collapse"] == pytest.approx([run["collapse_std"]])
        # Held-out images in eval mode, as `siamkit eval metrics` reads g(h).
        held_out = representation_metrics(Path(cell.folder) / "seed-0")["g"]["collapse_std"]
        assert cell.values["collapse_eval"] == pytest.approx([held_out])
        assert held_out != pytest.approx(run["collapse_std"], abs=1e-3)
    # threshold 0: any spread is healthy; one seed and no noise floor: a difference is undecided
    assert [c.verdict for c in result.claims] == ["inconclusive", "reproduced"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"][0]["text"] == "stop-gradient matters"
    assert saved["claims"][0]["verdict"] == "inconclusive" and saved["alpha"] == 0.05
    report = (out / "report.md").read_text()
    # The paper's figure beside the measured one, in the row of each cell.
    row = next(line for line in report.splitlines() if line.startswith("| with stop-gradient"))
    assert "67.7" in row and f"{result.cells[0].values['knn'][0]:.2f} (1)" in row
    assert "one-sided t test at level 0.05" in report
    assert "## Claims" in report and "stop-gradient matters" in report
    assert "![tiny](tiny.png)" in report and (out / "tiny.png").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")

    # Resuming a finished experiment trains nothing and takes no measure again.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("siamkit.train.pretrain", no_training)
    monkeypatch.setattr(runner_module, "take", no_training)
    again = run_experiment(exp, "cpu", out, resume=True, log=lambda line: None)
    assert [c.values for c in again.cells] == [c.values for c in result.cells]


def test_an_occupied_folder_needs_resume_or_overwrite(tmp_path):
    exp = load_experiment(str(_experiment_file(tmp_path)))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "experiment.json").write_text(json.dumps({"name": "other", "scale": "cpu"}))
    with pytest.raises(ConfigError, match=r"already holds experiment 'other'.*--resume"):
        run_experiment(exp, "cpu", out, log=lambda line: None)
    with pytest.raises(ConfigError, match="holds experiment 'other'"):
        run_experiment(exp, "cpu", out, resume=True, log=lambda line: None)
    with pytest.raises(ConfigError, match="no 'gpu' scale"):
        run_experiment(exp, "gpu", tmp_path / "elsewhere", log=lambda line: None)
    assert not (tmp_path / "elsewhere").exists()  # refused before anything was written


def test_a_cell_whose_config_changed_is_not_silently_continued(tmp_path):
    path = _experiment_file(tmp_path)
    out = tmp_path / "out"
    run_experiment(load_experiment(str(path)), "cpu", out, log=lambda line: None)
    path.write_text(TINY.format(steps=3).replace("optim.batch_size=64", "optim.batch_size=32"))
    with pytest.raises(ConfigError, match=r"another config.*optim.batch_size"):
        run_experiment(load_experiment(str(path)), "cpu", out, resume=True, log=lambda line: None)


def test_a_killed_experiment_resumes_without_rerunning_finished_cells(tmp_path):
    # The second cell trains long enough to be killed in the middle (checkpoints every 5 steps).
    path = _experiment_file(tmp_path, steps=60)
    path.write_text(
        path.read_text().replace("train.seed=0]", "train.seed=0, train.checkpoint_every_steps=5]")
    )
    out = tmp_path / "out"
    siamkit = Path(sys.executable).parent / "siamkit"  # the console script of this environment
    cmd = [str(siamkit), "experiment", str(path), "--output", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "with-stop-gradient" / "seed-0" / "measures.json"
    second_ckpt = out / "without-stop-gradient" / "seed-0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not second_ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the experiment ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.is_file()
    assert not (out / "without-stop-gradient" / "seed-0" / "results.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in (out / "with-stop-gradient").rglob("*")}

    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming its pretraining" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the first cell untouched
    results = json.loads((out / "results.json").read_text())
    assert [len(c["values"]) for c in results["cells"]] == [3, 3]
    assert (out / "report.md").is_file()


#: Two Gaussian cells of known MI: no pretraining, no recipe.
GAUSSIAN = """
title: "tiny: known MI"
citation: "Belghazi et al., arXiv:1801.04062"
paper_metric: "nats"
about: "A test experiment."
scales:
  cpu: {mi_steps: 150, mi_batch: 128, seeds: 2, mi_infonce_batch: 32}
measures:
  - {name: mine, kind: gaussian_mi, estimator: mine}
  - {name: infonce, kind: gaussian_mi, estimator: infonce}
cells:
  - {name: "rho 0", kind: gaussian_mi, dim: 2, rho: 0.0, paper: {mine: 0.0, infonce: 0.0}}
  - {name: "rho 0.9", kind: gaussian_mi, dim: 2, rho: 0.9, paper: {mine: 1.6607, infonce: 1.6607}}
claims:
  - text: "dependence shows"
    check: {kind: greater, cells: ["rho 0.9", "rho 0"], measure: mine}
"""


def test_an_experiment_without_pretraining_names_no_recipe(tmp_path):
    path = tmp_path / "known_mi.yaml"
    path.write_text(GAUSSIAN)
    result = run_experiment(load_experiment(str(path)), "cpu", tmp_path / "out", log=lambda _: None)
    independent, dependent = (c.values for c in result.cells)
    # 150 steps are enough to see 1.66 nats of dependence, and nothing where there is none.
    assert len(dependent["mine"]) == 2 and dependent["mine"][0] != dependent["mine"][1]
    assert min(dependent["mine"]) > 0.8 and max(abs(v) for v in independent["mine"]) < 0.1
    assert max(dependent["infonce"]) <= math.log(32) + 1e-6
    assert result.claims[0].verdict == "reproduced"
    how = (tmp_path / "out" / "report.md").read_text().split("## How")[1]
    assert "siamkit at the cpu scale, 2 seeds a cell:" in how and "recipe" not in how


def test_seeds_run_in_rounds_and_more_seeds_extend_a_finished_experiment(tmp_path):
    exp = load_experiment(str(_experiment_file(tmp_path, steps=2)))
    out = tmp_path / "out"
    lines: list[str] = []
    result = run_experiment(exp, "cpu", out, log=lines.append, seeds=2)
    # Round by round: every cell's seed 0 before any cell's seed 1.
    starts = [line for line in lines if "cell" in line]
    assert ["seed 1/2" in line for line in starts] == [True, True, False, False]
    for cell in result.cells:
        assert cell.seeds == [0, 1] and len(cell.values["knn"]) == 2
        seeds = [
            yaml.safe_load((Path(cell.folder) / f"seed-{s}" / "config.yaml").read_text())["train"]
            for s in (0, 1)
        ]
        assert [t["seed"] for t in seeds] == [0, 1]  # the cell's seed replaces the scale's
    row = next(
        line
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith("| with stop-gradient")
    )
    assert " +- " in row and "(2)" in row
    again = run_experiment(exp, "cpu", out, resume=True, log=lambda _: None, seeds=3)
    assert [c.seeds for c in again.cells] == [[0, 1, 2], [0, 1, 2]]
    assert [c.values["knn"][:2] for c in again.cells] == [c.values["knn"] for c in result.cells]


def test_resuming_keeps_every_seed_and_refuses_measures_taken_otherwise(tmp_path):
    path = tmp_path / "known_mi.yaml"
    text = GAUSSIAN.replace("mi_steps: 150", "mi_steps: 20").replace(
        '    check: {kind: greater, cells: ["rho 0.9", "rho 0"], measure: mine}',
        '    check: {kind: greater, cells: ["rho 0.9", "rho 0"], measure: mine}\n'
        '  - text: "only the paper scale tests this"\n'
        "    scales: [paper]\n"
        '    check: {kind: greater, cells: ["rho 0", "rho 0.9"], measure: mine}',
    )
    path.write_text(text)
    out = tmp_path / "out"
    exp = load_experiment(str(path))
    first = run_experiment(exp, "cpu", out, log=lambda _: None, seeds=3)
    assert first.claims[1].verdict == "not tested"
    # Without --seeds a resumed experiment keeps the 3 seeds it has, not the scale's 2.
    again = run_experiment(exp, "cpu", out, resume=True, log=lambda _: None)
    assert [c.seeds for c in again.cells] == [[0, 1, 2], [0, 1, 2]]
    assert [c.values for c in again.cells] == [c.values for c in first.cells]
    # A measure whose settings changed is not mixed with the kept values.
    path.write_text(text.replace("mi_steps: 20", "mi_steps: 30"))
    with pytest.raises(ConfigError, match=r"took mine, infonce with other settings"):
        run_experiment(load_experiment(str(path)), "cpu", out, resume=True, log=lambda _: None)
