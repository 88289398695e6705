"""The reasoning-gym reward's scorer is built once per dataset (issue 14: building it per sample was
88% of the reward's time), and scores exactly as reasoning-gym's own `get_score_answer_fn` does."""

import reasoning_gym

from rlvr import tasks
from rlvr.tasks import Problem, score_reasoning_gym

# some whose score_answer reads self.config (decimal_arithmetic, time_intervals, polynomial_equations,
# puzzle_24), partial credit (chain_sum), text answers (letter_jumble), structures (n_queens)
NAMES = [
    "chain_sum",
    "basic_arithmetic",
    "decimal_arithmetic",
    "time_intervals",
    "polynomial_equations",
    "puzzle24",
    "letter_jumble",
    "n_queens",
    "propositional_logic",
    "fraction_simplification",
]


def answers(entry: dict) -> list[str]:
    gold = str(entry["answer"])
    return [gold, gold + "0", "-" + gold, gold[: len(gold) // 2], "", "no idea", " " + gold + " "]


def test_cached_scores_equal_reasoning_gyms_own(monkeypatch):
    rows = []
    for name in NAMES:
        for entry in reasoning_gym.create_dataset(name, size=4, seed=3):
            rows += [(name, entry, a) for a in answers(entry)]
    want = [reasoning_gym.get_score_answer_fn(n)(a.strip(), e) for n, e, a in rows]  # a fresh scorer each
    built = []
    real = reasoning_gym.get_score_answer_fn
    monkeypatch.setattr(reasoning_gym, "get_score_answer_fn", lambda n: built.append(n) or real(n))
    tasks._scorer.cache_clear()
    got = [score_reasoning_gym(a, Problem(e["question"], str(e["answer"]), {"entry": e})) for _, e, a in rows]
    assert got == want
    assert sorted(built) == sorted(set(NAMES))  # one scorer per dataset, not one per sample
    assert len(set(want)) > 2  # full, partial and no credit all appear: the comparison can tell them apart
