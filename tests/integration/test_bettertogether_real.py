"""BetterTogether end to end on the real packaged student, on the CPU: DSPy optimizes the Iris
program with p -> w against adaptlab's server (over HTTP), the w step LoRA-tunes the 135M with
adaptlab's trainer through the provider, and the tuned adapter is then the one answering.
About 2-3 minutes on 2 cores."""
from __future__ import annotations

import pytest

dspy = pytest.importorskip("dspy")

from adaptlab.programs import tasks  # noqa: E402
from adaptlab.programs.adapter import FieldAdapter  # noqa: E402
from adaptlab.programs.provider import AdaptlabProvider  # noqa: E402

pytestmark = pytest.mark.slow


def test_bettertogether_p_then_w_on_the_packaged_student(tmp_path):
    from safetensors.torch import load_file

    task = tasks.get("iris")
    train, val, _ = task.load(seed=0, n_train=12, n_val=6, n_test=3)
    provider = AdaptlabProvider("smollm2-135m-instruct", tmp_path / "adapters", batch_size=8,
                                tune={"epochs": 2, "lr": 3e-4, "lora_r": 8, "batch_size": 4})
    try:
        lm = provider.lm(temperature=0, max_tokens=24, cache=False, num_retries=1)
        program = task.program()
        program.set_lm(lm)
        with dspy.context(lm=lm, adapter=FieldAdapter()):
            p = dspy.BootstrapFewShotWithRandomSearch(metric=task.metric, max_bootstrapped_demos=2,
                                                      max_labeled_demos=3, num_candidate_programs=0,
                                                      num_threads=4)
            w = dspy.BootstrapFinetune(metric=task.metric, num_threads=4)
            out = dspy.BetterTogether(metric=task.metric, p=p, w=w).compile(
                program, trainset=train, valset=val, strategy="p -> w")
            assert out.flag_compilation_error_occurred is False
            cand = {c["strategy"]: c for c in out.candidate_programs}
            assert set(cand) == {"", "p", "p -> w"}

            # one LoRA adapter, trained on the traces that passed, its weights moved from init
            assert len(provider.jobs) == 1
            job = provider.jobs[0]
            assert job.examples >= 1 and job.steps >= 1 and not job.reused
            weights = load_file(f"{job.path}/adapter_model.safetensors")
            lora_b = [t for k, t in weights.items() if "lora_B" in k]
            assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero

            # the p -> w program answers through that adapter, served under its own name
            tuned = cand["p -> w"]["program"]
            assert tuned.predictors()[0].lm.model == f"openai/{job.name}"
            assert job.name in provider.server.adapters
            tuned.predictors()[0].lm.launch()
            before = provider.usage().get(job.name, {}).get("generations", 0)
            pred = tuned(**val[0].inputs())
            assert provider.usage()[job.name]["generations"] == before + 1
            assert isinstance(pred.species, str)
    finally:
        provider.close()
