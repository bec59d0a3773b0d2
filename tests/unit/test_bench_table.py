"""bench.table: CPU and GPU result files render into separate tables; the README block is replaced."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402


def _train(flops_key: str, tok_s: float, gpu: str | None) -> dict:
    row = {"tokens_per_s": tok_s, "s_per_step": 1.0, "median_s_per_step": 1.0,
           "peak_rss_mb_train": 100.0, "final_train_loss": 2.0, "train_loss_on": "assistant tokens",
           "val_loss": 2.1, "mfu": 0.5}
    return {"model": "m", "precision": "bf16" if gpu else "fp32", "lora": {"r": 8}, "batch_size": 4,
            "steps": 12, "lr": 2e-4, "train_examples": 120, "val_examples": 24, "base_val_loss": 2.2,
            flops_key: 1e11, "matmul_dtype": "bfloat16" if gpu else "float32",
            "random_init": bool(gpu), "machine": {"gpu": gpu},
            "contenders": [{**row, "contender": "adaptlab"},
                           {**row, "contender": "trl", "tokens_per_s": tok_s / 2}]}


def test_cpu_and_gpu_results_render_separately(tmp_path):
    (tmp_path / "train_sft.json").write_text(json.dumps(_train("matmul_flops_fp32", 160.0, None)))
    (tmp_path / "gpu-train_sft.json").write_text(json.dumps(_train("matmul_flops", 9000.0, "H100")))
    cpu, gpu = table.render(tmp_path), table.render(tmp_path, gpu=True)
    assert "| adaptlab | 160.0 | 1.00×" in cpu and "| trl | 80.0 | 2.00×" in cpu
    assert "fp32 matmul ceiling: 100 GFLOP/s" in cpu and "9,000" not in cpu
    assert "GPU H100" in gpu and "| adaptlab | 9,000.0 |" in gpu
    assert "bf16 matmul ceiling" in gpu and "Random-init" in gpu


def test_readme_block_replaced_and_missing_block_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{table.START}\nold\n{table.END}\noutro\n")
    assert table.update_readme(readme, "new table\n")
    text = readme.read_text()
    assert "old" not in text and "new table" in text and text.startswith("intro") and "outro" in text
    plain = tmp_path / "PLAIN.md"
    plain.write_text("nothing here\n")
    assert not table.update_readme(plain, "x")
    assert plain.read_text() == "nothing here\n"


def _fast_train() -> dict:
    row = {"s_per_step": 1.0, "median_s_per_step": 1.0, "peak_rss_mb_train": 100.0,
           "final_train_loss": 2.0, "val_loss": 2.1, "tokens": 1000}
    return {"model": "m", "precision": "fp32", "lora": {"r": 8}, "batch_size": 4, "steps": 12, "lr": 2e-4,
            "train_examples": 120, "val_examples": 24, "base_val_loss": 2.2, "matmul_flops": 1e11,
            "matmul_dtype": "float32", "machine": {},
            "contenders": [
                {**row, "contender": "adaptlab", "tokens_per_s": 150.0, "train_loss_on": "assistant tokens",
                 "head_rows": 600, "mfu": 0.4},
                {**row, "contender": "trl", "tokens_per_s": 60.0, "train_loss_on": "whole sequence",
                 "gradient_checkpointing": True, "head_rows": 1300, "mfu": 0.2},
                {**row, "contender": "trl-fast", "tokens_per_s": 100.0, "train_loss_on": "completion tokens",
                 "gradient_checkpointing": False, "padding_free": True, "head_rows": 996, "mfu": 0.3,
                 "speed_options": ["padding_free", "completion_only_loss", "no gradient checkpointing"]}]}


def _teacher() -> dict:
    base = {"prompts": 32, "ttft_s": 1.5, "peak_rss_mb": 3000.0}
    return {"model": "qwen", "max_new_tokens": 48, "prompts": 32, "naive_prompts": 8, "rows": [
        {**base, "contender": "naive", "precision": "fp32", "batch_size": 1, "prompts": 8,
         "tokens_per_s": 4.0, "speedup_vs_old": 0.69, "identical_to_naive": [8, 8]},
        {**base, "contender": "old", "precision": "fp32", "batch_size": 32, "tokens_per_s": 5.8,
         "speedup_vs_old": 1.0, "identical_to_naive": [8, 8]},
        {**base, "contender": "new", "precision": "bf16", "batch_size": 32, "tokens_per_s": 30.26,
         "speedup_vs_old": 5.2, "identical_to_naive": [6, 8], "agree_fp32": [29, 32]},
        {**base, "contender": "llamacpp", "batch_size": 1, "tokens_per_s": 23.5, "speedup_vs_old": 4.05,
         "ttft_s": None, "peak_rss_mb": 900.0, "identical_to_naive": None, "gguf": "t.gguf"}]}


def test_train_table_with_trl_fast_and_measured_head_rows():
    text = table.train_table(_fast_train())
    assert "| trl-fast (padding_free, completion_only_loss, no gradient checkpointing) | 100.0 | 1.50× |" in text
    assert "| trl (grad. checkpointing) | 60.0 | 2.50× |" in text
    assert "LM head rows ÷ tokens" in text
    assert "| 60% | 40.0% |" in text and "| 130% | 20.0% |" in text  # adaptlab, trl
    assert "1.50× TRL with its speed options on" in text and "2.50× TRL at its defaults" in text
    assert "per row the LM head was applied to" in text


def test_teacher_table_renders_rows_and_agreement(tmp_path):
    text = table.teacher_table(_teacher())
    assert text.startswith("**Teacher generation** — qwen")
    assert ("| contender | precision | batch | prompts | tokens/s | × old LocalLM | TTFT s | peak RAM MB | "
            "identical to naive | agrees with fp32 |") in text
    assert "| LocalLM, engine=continuous (new) | bf16 | 32 | 32 | 30.3 | 5.20× | 1.50 | 3,000 | 6/8 | 29/32 |" in text
    assert "| LlamaCppLM (GGUF as shipped) | GGUF t.gguf | 1 | 32 | 23.5 | 4.05× | – | 900 | – | – |" in text
    assert "| naive generate loop | fp32 | 1 | 8 | 4.0 | 0.69× | 1.50 | 3,000 | 8/8 | – |" in text
    no_agree = _teacher()
    for r in no_agree["rows"]:
        r.pop("agree_fp32", None)
    assert "agrees with fp32" not in table.teacher_table(no_agree)
    assert "failed" not in text
    broken = _teacher()
    broken["failed"] = [{"contender": "llamacpp", "error": "with exit code -4"}]
    assert "LlamaCppLM (GGUF as shipped): failed (with exit code -4), no row." in table.teacher_table(broken)
    # render() picks up teacher.json next to the training results
    (tmp_path / "train_sft.json").write_text(json.dumps(_fast_train()))
    (tmp_path / "teacher.json").write_text(json.dumps(_teacher()))
    out = table.render(tmp_path)
    assert out.index("**LoRA SFT**") < out.index("**Teacher generation**")


def test_a_run_kept_from_another_machine_follows_its_current_table(tmp_path):
    kept = _teacher()
    kept["machine"] = {"cpu": "Other CPU"}
    kept["rows"][2]["tokens_per_s"] = 11.11
    (tmp_path / "teacher.json").write_text(json.dumps({**_teacher(), "machine": {"cpu": "This CPU"}}))
    (tmp_path / "teacher@other.json").write_text(json.dumps(kept))
    (tmp_path / "train_sft.json").write_text(json.dumps({**_fast_train(), "machine": {"cpu": "This CPU"}}))
    out = table.render(tmp_path)
    assert out.count("**Teacher generation**") == 2
    assert out.index("on This CPU") < out.index("| 30.3 |") < out.index("on Other CPU") < out.index("| 11.1 |")
    # the kept run is shown once, after the current one, not among the other models' teacher-* tables
    res = {"teacher": 1, "teacher@other": 1, "teacher-big": 1}
    assert [k for k, _ in table._tables(res) if k in res] == ["teacher", "teacher@other", "teacher-big"]
