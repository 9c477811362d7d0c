"""nas.objective and nas.oracles: the score, the oracles, regularized evolution."""

import keras_tuner as kt
import pytest
from nas_helpers import (
    StubSearch,
    assert_mutates_window_winners,
    make_tuner,
    over_budget_trials,
    run_evolution,
)

from kd_keras import distribute
from nas import objective as objective_lib
from nas import oracles, report


def test_bayesian_oracle_models_the_conditional_space(tmp_path):
    oracle = oracles.make_oracle("bayesian", max_trials=4, num_initial_points=2, seed=0)
    search = make_tuner(tmp_path, oracle, StubSearch)
    search.search(verbose=0)
    rows = report.write_outputs(search)["rows"]
    # Trials 3 and 4 come from the Gaussian process fitted on conditional
    # hyperparameters and on negative (over-budget) scores.
    assert len(search.calls) == 4 and [r["status"] for r in rows] == ["COMPLETED"] * 4
    assert all(r["score"] is not None for r in rows)


def test_objective_puts_every_infeasible_trial_below_every_feasible_one():
    budget = objective_lib.Budget(max_latency_us=100, max_bytes=1000)
    excess = budget.excess({"latency_us": 150.0, "file_bytes": 500, "params": 10**9})
    assert excess == {"latency_us": pytest.approx(0.5), "file_bytes": 0.0}
    assert objective_lib.objective(0.9, excess) == pytest.approx(0.9 - 1.0 - 0.5)
    assert objective_lib.objective(0.3, {"file_bytes": 0.0}) == 0.3
    assert objective_lib.objective(0.0, {}) > objective_lib.objective(1.0, {"params": 1e-9})
    with pytest.raises(ValueError, match="max_bytes"):
        objective_lib.Budget(max_bytes=-1)
    with pytest.raises(ValueError, match="latency_us"):
        budget.excess({"file_bytes": 1})
    arena = objective_lib.Budget(max_arena_bytes=20000)
    assert arena.excess({"arena_bytes": 30000, "tflm_runs": 1.0}) == {
        "arena_bytes": pytest.approx(0.5)
    }
    # A model TFLM cannot run is out of any arena budget.
    assert arena.excess({"arena_bytes": 0, "tflm_runs": 0.0}) == {"arena_bytes": 1.0}


def test_oracles_and_distributed_role():
    assert isinstance(oracles.make_oracle("hyperband", epochs=3), kt.oracles.HyperbandOracle)
    assert isinstance(
        oracles.make_oracle("bayesian", max_trials=4), kt.oracles.BayesianOptimizationOracle
    )
    with pytest.raises(ValueError, match="allowed"):
        oracles.make_oracle("grid")
    assert distribute.distributed_role({}) == "single"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distribute.distributed_role(dict(env, KERASTUNER_TUNER_ID="chief")) == "chief"
    assert distribute.distributed_role(dict(env, KERASTUNER_TUNER_ID="worker1")) == "worker"


def test_evolution_starts_from_the_hand_points_then_mutates_tournament_winners(tmp_path):
    search, start = run_evolution(tmp_path / "a")
    trials = sorted(search.oracle.trials.values(), key=lambda t: t.trial_id)
    values = [dict(t.hyperparameters.values) for t in trials]
    assert len(values) == 8 and over_budget_trials(search) == []
    # cnn:1.0 (24k parameters) is over MAX_PARAMS: refused by the budget, never trained.
    assert values[0] == start[0] and start[1] not in values
    assert search.oracle.rejected >= 1
    # From the 4th trial on (population 3 completed), each trial is one
    # neighbouring move away from the best of the last 3 completed trials
    # (sample == population: the tournament winner is the window's best).
    assert_mutates_window_winners(search)
    # One seed, one sequence of trials; another seed, another one.
    again, _ = run_evolution(tmp_path / "b")
    other, _ = run_evolution(tmp_path / "c", seed=1)
    assert_mutates_window_winners(other)

    def seq(s):
        return [
            t.hyperparameters.values
            for t in sorted(s.oracle.trials.values(), key=lambda t: t.trial_id)
        ]

    assert seq(again) == values and seq(other) != values


def test_tournament_windows_keep_the_elite_fittest_and_the_latest_of_the_rest():
    import types

    def trial(i, score):
        return types.SimpleNamespace(trial_id=f"{i:02d}", score=score)

    def oracle(elite):
        return oracles.make_oracle("evolution", population=3, sample=2, elite=elite)

    # Two good trials early on, then weak ones.
    done = [trial(0, 0.88), trial(1, 0.86), trial(2, 0.70), trial(3, 0.75), trial(4, 0.72)]
    ids = lambda ts: [t.trial_id for t in ts]  # noqa: E731
    assert ids(oracle(0).window(done)) == ["02", "03", "04"]  # aging alone
    assert ids(oracle(3).window(done)) == ["00", "01", "03"]  # the best, in trial order
    assert ids(oracle(1).window(done)) == ["00", "03", "04"]  # best 1 + latest 2
    assert ids(oracle(2).window(done[2:])) == ["02", "03", "04"]  # all, when few
    # Ties go to the later trial.
    tied = [trial(i, 0.8) for i in range(4)]
    assert ids(oracle(3).window(tied)) == ["01", "02", "03"]
    with pytest.raises(ValueError, match="--evolution_elite"):
        oracle(4)


def test_evolution_flags_and_hand_trials_are_not_found_students(tmp_path):
    from nas import final

    with pytest.raises(ValueError, match="--evolution_sample"):
        oracles.make_oracle("evolution", max_trials=2, population=2, sample=3)
    search, start = run_evolution(tmp_path, trials=4)
    rows = report.write_outputs(search)["rows"]
    assert any(r["hyperparameters"] == start[0] for r in rows)
    got = final.entries(rows, top=10, hand=["cnn:0.25"], hypermodel=search.hypermodel)
    found = [e for e in got if e["source"] == "search"]
    assert found and all(e["values"] != start[0] for e in found)
    assert [e["name"] for e in got if e["source"] == "hand"] == ["cnn_0.25"]


def test_oracle_seed_zero_is_a_fixed_seed():
    # keras-tuner draws a random seed for a falsy one; seed 0 must not mean "random".
    for kind in ("random", "hyperband", "evolution"):
        a, b = oracles.make_oracle(kind, seed=0), oracles.make_oracle(kind, seed=0)
        assert a.seed == b.seed == oracles.ZERO_SEED
    assert oracles.make_oracle("random", seed=5).seed == 5


@pytest.mark.parametrize("kind", ["random", "hyperband", "evolution"])
def test_draw_counts_are_oracle_state(kind):
    oracle = oracles.make_oracle(kind, max_trials=2, epochs=3)
    oracle.draws, oracle.rejected = 7, 3
    resumed = oracles.make_oracle(kind, max_trials=2, epochs=3)
    assert (resumed.draws, resumed.rejected) == (0, 0)
    resumed.set_state(oracle.get_state())
    assert (resumed.draws, resumed.rejected) == (7, 3)


@pytest.mark.parametrize("seconds, draws", [(1e9, oracles.MAX_DRAWS), (0.0, 1)])
def test_draws_that_miss_the_budget_are_bounded_in_count_and_time(
    monkeypatch, capsys, seconds, draws
):
    monkeypatch.setattr(oracles, "MAX_DRAW_SECONDS", seconds)
    oracle = oracles.make_oracle("random", max_trials=2, seed=1)
    oracle.hyperparameters = kt.HyperParameters()
    oracle.hyperparameters.Int("width", 1, 1000)
    oracle.budget_check = lambda values: False  # An impossible budget.
    assert oracle._random_values() is not None
    assert oracle.draws == draws and oracle.rejected == draws
    out = capsys.readouterr().out
    assert f"no candidate in {draws} random draws" in out
    assert ("10 draws in a row missed the budget" in out) == (draws == oracles.MAX_DRAWS)
