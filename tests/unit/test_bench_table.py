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
