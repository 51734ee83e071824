"""`routebatch demo` end to end on local Ray: the split is by article, the router
learns only from the training article, and the headline it prints is what the run's
Parquet scores."""

import json
import re

import pyarrow.parquet as pq
import pytest

from pipelines.cli import build_parser
from pipelines.cli import main as cli
from routing.answers.squad import load_squad, score_predictions

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("router", ["learned-cascade", "knn"])
def test_demo_runs_the_whole_story_out_of_sample(local_ray, tmp_path, capsys, router):
    root = tmp_path / "demo"
    assert cli(["demo", "--output", str(root)] + ([] if router == "learned-cascade" else ["--router", router])) == 0
    printed = capsys.readouterr().out

    train = load_squad(root / "data" / "train" / "questions.json")
    test = load_squad(root / "data" / "test" / "questions.json")
    assert {q.title for q in train} == {"Normans"} and {q.title for q in test} == {"Southern_California"}
    profiled = {q.id for q in load_squad(root / "profile-train" / "questions.json")}
    assert profiled == {q.id for q in train}  # every training question profiled (--no-adaptive) ...
    checkpoint = json.loads((root / "router" / "router.json").read_text())
    assert checkpoint["format"] == {"learned-cascade": "routebatch-learned-cascade", "knn": "routebatch-router"}[router]
    info = checkpoint["info"]
    assert info["profile"].endswith("profile-train")  # ... and the router learned from that profile only
    assert info["n_fit"] + info["n_calibration"] <= len(train)
    assert profiled.isdisjoint(q.id for q in test)

    rows = pq.read_table(root / "run").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(q.id for q in test)
    assert len({r["expert"] for r in rows}) >= 2
    # A cascade run says whom each row asked; a pre-answer router asks one expert.
    assert all((r["consulted"] is not None) == (router == "learned-cascade") for r in rows)
    f1 = score_predictions(test, {r["id"]: r["answer"] for r in rows}).as_dict()["f1"]
    cost = sum(r["cost_usd"] for r in rows)

    figures = json.loads((root / "run" / "_report" / "report.json").read_text())
    assert figures["quality"]["f1"] == pytest.approx(f1) and figures["cost"]["total_usd"] == pytest.approx(cost)
    assert (root / "run" / "_report" / "report.html").exists()
    headline = re.search(r"routed run:\s+F1 ([\d.]+)\s+cost \$([\d.]+)", printed)
    assert headline and float(headline.group(1)) == pytest.approx(100 * f1, abs=0.005)
    assert float(headline.group(2)) == pytest.approx(cost, abs=5e-5)
    assert "best single: F1" in printed and "out of sample" in printed
    # The commands it prints for redoing each step are valid command lines.
    commands = [line.strip().split("#")[0].split()[1:] for line in printed.splitlines() if line.startswith("  routebatch ")]
    assert len(commands) == 6
    for argv in commands:
        build_parser().parse_args(argv)
    assert local_ray.is_initialized()  # it used the Ray it found and left it running
