"""bench.train_sft's FLOP counting: the LM head is counted on the rows it was applied to only."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import train_sft  # noqa: E402


def test_train_flops_on_hand_numbers():
    # 10 tokens through a 100-parameter backbone, the 50-parameter head on 3 of them:
    # 4 * 100 * 10 + 4 * 50 * 3
    assert train_sft.train_flops(10, 3, 100, 50) == 4600
    assert train_sft.train_flops(10, 0, 100, 50) == 4000
    # the earlier convention (head on every token, 4 x all base params) is the head_rows == tokens case
    assert train_sft.train_flops(10, 10, 100, 50) == 4 * 150 * 10


def test_add_flops_mfu_from_measured_head_rows():
    row = {"tokens": 1000, "head_rows": 400, "backbone_params": 100, "head_params": 50,
           "base_params": 150, "loop_seconds": 2.0, "tokens_per_s": 500.0}
    train_sft.add_flops(row, peak_flops=1e6)
    assert row["train_flops"] == 4 * 100 * 1000 + 4 * 50 * 400 == 480_000
    assert row["flops_per_token"] == 480
    assert row["head_rows_per_token"] == 0.4
    assert row["mfu"] == pytest.approx(480_000 / 2.0 / 1e6, abs=1e-4)  # 0.24
    assert row["mfu_head_on_all_tokens"] == pytest.approx(500.0 * 4 * 150 / 1e6, abs=1e-4)  # 0.3
    # a head that also scores padding (more rows than tokens) costs more, not less
    padded = train_sft.add_flops({**row, "head_rows": 1300}, peak_flops=1e6)
    assert padded["mfu"] > padded["mfu_head_on_all_tokens"]


def test_head_counter_counts_rows_of_training_forwards_and_the_fused_kernel():
    torch = pytest.importorskip("torch")
    head = torch.nn.Linear(4, 7, bias=False)
    counter_module = SimpleNamespace()

    class Kernel:  # stands in for trl.trainer.utils._ChunkedLogProbFunction
        @staticmethod
        def apply(hidden, weight, *rest):
            return hidden @ weight.t()

    counter_module._ChunkedLogProbFunction = Kernel
    heads = train_sft.HeadCounter(head, fused_module=counter_module)
    head.train()
    head(torch.zeros(2, 5, 4))              # 10 rows (batch x positions)
    head(torch.zeros(3, 4))                 # 3 rows (labelled positions only)
    counter_module._ChunkedLogProbFunction.apply(torch.zeros(6, 4), head.weight)  # 6 rows, head not called
    assert (heads.rows, heads.calls) == (19, 3)
    head.eval()
    head(torch.zeros(8, 4))                 # evaluation: not counted
    head.train()
    with torch.no_grad():
        head(torch.zeros(8, 4))             # no grad: not counted
        counter_module._ChunkedLogProbFunction.apply(torch.zeros(8, 4), head.weight)
    assert heads.rows == 19


def test_head_counter_counts_rows_given_to_adaptlabs_fused_head_loss():
    torch = pytest.importorskip("torch")
    from adaptlab.train import head_loss

    head = torch.nn.Linear(4, 7, bias=False)
    module = SimpleNamespace(linear_cross_entropy=head_loss.linear_cross_entropy)
    heads = train_sft.HeadCounter(head)
    heads.wrap(module, "linear_cross_entropy")
    h = torch.randn(5, 4, requires_grad=True)
    loss = module.linear_cross_entropy(h, head.weight, None, torch.tensor([0, 1, 2, 3, 4]))
    assert loss.requires_grad and (heads.rows, heads.calls) == (5, 1)  # the head module not called
    with torch.no_grad():
        module.linear_cross_entropy(h, head.weight, None, torch.tensor([0, 1, 2, 3, 4]))
    assert heads.rows == 5


def test_param_split_excludes_embedding_and_lora():
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self, tied: bool):
            super().__init__()
            self.embed = torch.nn.Embedding(11, 3)
            self.layer = torch.nn.Linear(3, 3)          # 12 params
            self.layer_lora_A = torch.nn.Linear(3, 1, bias=False)
            self.lm_head = torch.nn.Linear(3, 11, bias=False)  # 33 params
            if tied:
                self.lm_head.weight = self.embed.weight

        def get_input_embeddings(self):
            return self.embed

        def get_output_embeddings(self):
            return self.lm_head

    # named_parameters() names it "layer_lora_A.weight": "lora_" in the name, so excluded
    assert train_sft.param_split(Tiny(tied=True)) == (12, 33)
    assert train_sft.param_split(Tiny(tied=False)) == (12, 33)


def test_loss_verdict_is_paired_and_can_say_worse():
    from bench.train_sft import loss_verdict

    base = [2.0 + 0.1 * (i % 7) for i in range(24)]  # chats differ a lot from one another
    same_but_noisy = {"val_loss_per_chat": [x + (0.01 if i % 2 else -0.01) for i, x in enumerate(base)]}
    worse = {"val_loss_per_chat": [x + 0.02 for x in base]}  # tiny, but on every chat
    ref = {"val_loss_per_chat": base}
    assert loss_verdict(same_but_noisy, ref)["no_worse"]
    v = loss_verdict(worse, ref)
    assert not v["no_worse"] and v["ci"][0] > 0 and abs(v["diff_per_chat"] - 0.02) < 1e-9
