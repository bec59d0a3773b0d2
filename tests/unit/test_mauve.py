"""adaptlab.evaluate.mauve (no mauve-text needed; tests/dev compares with it) and `adaptlab mauve`."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptlab import cli
from adaptlab.errors import AdaptlabError
from adaptlab.evaluate.mauve import (_MT19937, _rand_perm, bootstrap, divergence_curve,
                                     frontier_integral, mauve, mauve_texts)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tone_fakes import fake_embed  # noqa: E402  (hashed bags of words)


def gauss(n=200, m=200, d=16, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + shift


def test_identical_sets_score_one():
    p, _ = gauss()
    r = mauve(p, p.copy())
    assert r.score == pytest.approx(1.0, abs=1e-9)
    assert r.frontier_integral == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(r.p_hist, r.q_hist)


def test_far_apart_sets_score_near_zero():
    p, q = gauss(shift=10.0)
    r = mauve(p, q)
    assert r.score < 0.01
    assert r.frontier_integral > 0.99
    assert not np.any((r.p_hist > 0) & (r.q_hist > 0))  # no bucket holds both


def test_score_falls_as_the_shift_grows():
    p, q0 = gauss(n=300, m=300)
    scores = [mauve(p, q0 + s).score for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] > 0.9 and scores[-1] < 0.05


def test_result_shapes_and_histograms():
    p, q = gauss(n=150, m=400, shift=0.2)
    r = mauve(p, q)
    assert r.num_buckets == 15  # auto: round(min(n, m) / 10)
    assert r.p_hist.shape == r.q_hist.shape == (15,)
    assert r.p_hist.sum() == pytest.approx(1) and r.q_hist.sum() == pytest.approx(1)
    assert r.curve.shape == (27, 2)  # 25 mixtures + the two extremes
    np.testing.assert_allclose(r.curve[0], [1, 0])
    np.testing.assert_allclose(r.curve[-1], [0, 1])
    assert 0 < r.score < 1 and 0 < r.mauve_star < 1 and 1 <= r.dims <= 16


def test_same_seed_same_result_and_seed_is_used():
    p, q = gauss(shift=0.3)
    a, b = mauve(p, q, seed=3), mauve(p, q, seed=3)
    assert a.score == b.score
    np.testing.assert_array_equal(a.p_hist, b.p_hist)
    others = {round(mauve(p, q, seed=s).score, 12) for s in range(4)}
    assert len(others) > 1  # the seed reaches the k-means


def test_empty_clusters_are_split_and_finish():
    rng = np.random.default_rng(9)  # 40 distinct points for 20 buckets: clusters go empty
    p = np.repeat(rng.normal(size=(20, 8)), 10, axis=0)
    q = np.repeat(rng.normal(size=(20, 8)), 10, axis=0)
    r = mauve(p, q, kmeans_num_redo=1, kmeans_max_iter=50)
    assert 0 < r.score < 1 and np.isfinite(r.frontier_integral)


def test_bootstrap_intervals_separate_near_from_far_and_pair_on_p():
    p, near = gauss(n=40, m=40, d=8, seed=1)
    _, far = gauss(n=40, m=40, d=8, shift=1.0, seed=2)
    boot = bootstrap(p, {"near": near, "far": far}, n_boot=60, seed=3, num_buckets=4)
    assert set(boot) == {"near", "far"} and all(len(b) == 60 for b in boot.values())
    lo_near, hi_near = np.quantile(boot["near"], [0.025, 0.975])
    lo_far, hi_far = np.quantile(boot["far"], [0.025, 0.975])
    assert hi_far < lo_near  # a shift of one sd is resolved on 40 samples each
    assert lo_near < mauve(p, near, num_buckets=4).score <= hi_near + 1e-9
    assert hi_near - lo_near > 0.01  # resampling moves the score: a real interval, not a point
    # seeded: the same draws again; another seed, other draws
    again = bootstrap(p, {"near": near, "far": far}, n_boot=60, seed=3, num_buckets=4)
    np.testing.assert_array_equal(again["near"], boot["near"])
    other = bootstrap(p, {"near": near, "far": far}, n_boot=60, seed=4, num_buckets=4)
    assert not np.array_equal(other["near"], boot["near"])
    # each q set draws its own rows: two copies of one set get different scores
    twin = bootstrap(p, {"a": near, "b": near.copy()}, n_boot=30, seed=0, num_buckets=4)
    assert not np.array_equal(twin["a"], twin["b"])
    with pytest.raises(AdaptlabError, match="n_boot must be >= 1"):
        bootstrap(p, {"near": near}, n_boot=0)


def test_mt19937_is_the_cpp_one():
    """The C++ standard fixes the 10000th output of a default-seeded std::mt19937."""
    assert _MT19937(5489).draws(10000)[-1] == 4123659995


def test_rand_perm_is_a_seeded_permutation():
    a = _rand_perm(50, 28)
    assert sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, _rand_perm(50, 28))
    assert not np.array_equal(a, _rand_perm(50, 29))


def test_frontier_integral_extremes():
    assert frontier_integral(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert frontier_integral(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0


def test_divergence_curve_of_equal_histograms_is_the_corner():
    h = np.array([0.2, 0.3, 0.5])
    c = divergence_curve(h, h, np.linspace(1e-6, 1 - 1e-6, 5), 5.0)
    np.testing.assert_allclose(c[1:-1], 1.0)


@pytest.mark.parametrize("p, q, kw, expected", [
    (np.zeros((0, 4)), np.ones((5, 4)), {}, "p_features is empty"),
    (np.ones((5, 4)), np.zeros((0, 4)), {}, "q_features is empty"),
    (np.ones(5), np.ones((5, 4)), {}, "p_features must be 2-D"),
    (np.ones((5, 4)), np.ones((5, 3)), {}, "p has 4-dim features, q 3-dim"),
    (np.full((5, 4), np.nan), np.ones((5, 4)), {}, "NaN"),
    (np.array([["a"]]), np.ones((5, 1)), {}, "must be numbers"),
    (np.ones((5, 4)), np.ones((5, 4)), {"num_buckets": 11}, "too few samples: 5 + 5"),
    (np.ones((5, 4)), np.ones((5, 4)), {"num_buckets": 1}, "at least 2"),
    (np.ones((5, 4)), np.ones((5, 4)), {"num_buckets": "many"}, "'auto' or an integer"),
    (np.ones((5, 4)), np.ones((5, 4)), {"explained_var": 1.0}, "explained_var"),
    (np.ones((5, 4)), np.ones((5, 4)), {"discretization": 0}, "discretization"),
])
def test_bad_input_is_a_clear_error(p, q, kw, expected):
    with pytest.raises(AdaptlabError, match=re.escape(expected)):
        mauve(p, q, **kw)


@pytest.fixture
def fake_features(monkeypatch):
    import adaptlab.evaluate.embed

    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", fake_embed)


def texts(words: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = words.split()
    return [" ".join(rng.choice(vocab, size=8)) for _ in range(n)]


ANIMALS = "cat dog horse cow sheep goat duck hen pig fox owl bee"
TOOLS = "saw drill hammer nail screw bolt wrench file plane chisel vice clamp"


def test_mauve_texts_separates_topics(fake_features):
    same = mauve_texts(texts(ANIMALS, 60, 0), texts(ANIMALS, 60, 1))
    apart = mauve_texts(texts(ANIMALS, 60, 0), texts(TOOLS, 60, 1))
    assert same.score > 0.5 > 0.1 > apart.score


def test_mauve_texts_bad_input(fake_features):
    with pytest.raises(AdaptlabError, match="no q texts"):
        mauve_texts(["a"], [])
    with pytest.raises(AdaptlabError, match="p text 1 is a int"):
        mauve_texts(["a", 3], ["b"])


# -- the CLI ---------------------------------------------------------------------------------

def write_lines(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def two_files(tmp_path, monkeypatch, fake_features):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "p.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts(ANIMALS, 40, 0))])
    write_lines(tmp_path / "q.jsonl", [{"text": t} for t in texts(ANIMALS + " " + TOOLS, 40, 1)])
    return tmp_path


def test_cli_prints_only_the_score(two_files, capsys):
    before = sorted(two_files.rglob("*"))
    assert cli.main(["mauve", "p.jsonl", "q.jsonl", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"\d\.\d{4}\n", out) and err == ""
    p = [json.loads(line)["text"] for line in open("p.jsonl")]
    q = [json.loads(line)["text"] for line in open("q.jsonl")]
    assert out == f"{mauve_texts(p, q, seed=3).score:.4f}\n"
    assert sorted(two_files.rglob("*")) == before  # wrote nothing


def cli_error(capsys, argv) -> str:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptlab: error: "), err
    return lines[0][len("adaptlab: error: "):]


def test_cli_missing_file(two_files, capsys):
    assert cli_error(capsys, ["mauve", "p.jsonl", "nope.jsonl"]) == \
        "nope.jsonl: no such file or directory"


def test_cli_bad_json_names_file_and_line(two_files, capsys):
    write_lines(two_files / "q.jsonl", [{"text": "fine"}, '{"text": "cut'])
    msg = cli_error(capsys, ["mauve", "p.jsonl", "q.jsonl"])
    assert msg.startswith("q.jsonl:2: invalid JSON")


@pytest.mark.parametrize("record", [{"txt": "x"}, {"text": 3}, ["x"]])
def test_cli_line_without_a_string_text(two_files, capsys, record):
    write_lines(two_files / "p.jsonl", [{"text": "fine"}, {"text": "also"}, record])
    assert cli_error(capsys, ["mauve", "p.jsonl", "q.jsonl"]) == "p.jsonl:3: text: expected a string"


def test_cli_checks_both_files_before_embedding(two_files, capsys, monkeypatch):
    import adaptlab.evaluate.embed

    def never(*a, **k):
        raise AssertionError("embedded before both files were checked")

    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", never)
    write_lines(two_files / "q.jsonl", [{"text": "ok"}, {}])
    assert cli_error(capsys, ["mauve", "p.jsonl", "q.jsonl"]) == "q.jsonl:2: text: expected a string"
