"""The knowledge-intervention study end to end on the real packaged 135M student, at micro scale:
the probe reads the model's option probabilities, the sets follow the probe, tuning moves the
model's preferences (the adapters are really swapped in), and the report is written."""
from __future__ import annotations

import json
from pathlib import Path

from adaptlab.io import read_json, read_jsonl


def _questions(tmp: Path) -> Path:
    """20 shipped geography questions (probed and held out), 4 history, 4 mathematics."""
    take = {"geography": 20, "world_history": 4, "mathematics": 4}
    d = tmp / "questions"
    d.mkdir()
    for dom, n in take.items():
        lines = Path(f"corpora/knowledge/{dom}.jsonl").read_text().splitlines()[:n]
        (d / f"{dom}.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_knowledge_study_on_the_real_student(tmp_path, monkeypatch):
    from adaptlab.config import from_dict
    from adaptlab.data.mc import few_shot
    from adaptlab.evaluate.mc import option_probs
    from adaptlab.lm.local import LocalLM
    from adaptlab.runs.study import run_study
    from adaptlab.studies import knowledge

    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    cfg = from_dict(knowledge.Config, {
        "name": "knowledge-micro", "questions": [str(_questions(tmp_path))],
        "train_domains": ["geography"], "id_domains": ["world_history"], "ood_domains": ["mathematics"],
        "homo_n": 4, "shots": 2, "test_per_domain": 4, "models": ["smollm2-135m-instruct"],
        "threshold": 0.0, "max_set_size": 4, "ratios": [0, 1], "explanation_tokens": 12,
        "tune": {"max_steps": 3, "batch_size": 2, "lr": 5e-3, "lora_dropout": 0.0, "save_every": 0}})
    res = run_study("knowledge", knowledge, cfg)
    d = Path(res["run"])
    pool = read_jsonl(d / "data" / "pool.jsonl")
    probe = read_jsonl(d / "probe-smollm2-135m-instruct" / "probe.jsonl")
    assert len(probe) == len(pool) == 14
    # the probe's probabilities are the model's: recompute the first question directly
    demos = read_jsonl(d / "data" / "demos.jsonl")
    direct = option_probs(LocalLM("smollm2-135m-instruct"), [few_shot(pool[0], demos, "texts")],
                          pool[:1], "texts")[0]
    p0 = next(p for p in probe if p["id"] == pool[0]["id"])
    assert max(abs(a - b) for a, b in zip(direct, p0["raw_probs"])) < 1e-3
    by_id = {p["id"]: p for p in probe}
    sa = read_jsonl(d / "sets-smollm2-135m-instruct" / "self_aligning.jsonl")
    inc = read_jsonl(d / "sets-smollm2-135m-instruct" / "incompatible.jsonl")
    assert len(sa) == len(inc) >= 2 and all(r["letter"] == by_id[r["id"]]["pred"] for r in sa)
    m = read_json(d / "evaluate-smollm2-135m-instruct" / "metrics.json")
    kls = [m["systems"][s][split]["kl"] for s in ("harmonious", "incompatible", "self_aligning")
           for split in ("homo", "id", "ood")]
    assert max(kls) > 1e-3, kls  # tuning moved the option probabilities: the adapters were worn
    assert (d / "report" / "report.html").exists()
    answers = [json.loads(l) for l in open(d / "evaluate-smollm2-135m-instruct" / "answers.jsonl")]
    assert {a["system"] for a in answers} == {"base", "harmonious", "incompatible", "self_aligning"}
