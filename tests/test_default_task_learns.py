"""README's first command trains on the built-in addition task with the defaults: it must
really learn (>= 99% exact match on held-out problems). This is a learning test, not a
timing test; it stops as soon as an evaluation reaches 99%."""
import pytest

from tensorlite.train import TrainConfig, train


@pytest.mark.slow
def test_default_addition_run_reaches_99_percent_held_out(tmp_path):
    res = train(TrainConfig(out=str(tmp_path / "run"), progress=False, stop_at_accuracy=0.99),
                log=lambda *a: None)
    assert res["accuracy"] >= 0.99, res
