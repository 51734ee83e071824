"""Cost ledger arithmetic."""

import pytest

from routing.core.config import Cost
from routing.core.costs import charge_rows, share_seconds


def test_seconds_shared_by_tokens_and_never_lost():
    assert share_seconds(10.0, [1, 3, 6]) == pytest.approx([1.0, 3.0, 6.0])
    assert share_seconds(3.0, [0, 0, 0]) == pytest.approx([1.0, 1.0, 1.0])
    assert sum(share_seconds(7.3, [5, 11, 2, 0])) == pytest.approx(7.3)
    assert share_seconds(1.0, []) == []
    with pytest.raises(ValueError):
        share_seconds(-1.0, [1])


def test_every_price_component_adds_up():
    cost = Cost(usd_per_gpu_hour=3.6, usd_per_1k_input_tokens=0.5, usd_per_1k_output_tokens=2.0, usd_per_item=0.01)
    # 2 GPUs, a 10 s batch, two rows using 100+0 and 300+100 tokens -> 2 s and 8 s.
    rows = charge_rows(cost, num_gpus=2, batch_seconds=10.0, input_tokens=[100, 300], output_tokens=[0, 100])
    assert [r.seconds for r in rows] == pytest.approx([2.0, 8.0])
    per_second = 3.6 * 2 / 3600
    assert rows[0].cost_usd == pytest.approx(0.01 + 0.05 + 0 + per_second * 2)
    assert rows[1].cost_usd == pytest.approx(0.01 + 0.15 + 0.2 + per_second * 8)


def test_hourly_price_without_gpu_is_per_actor_hour_and_fractional_gpus_pay_fraction():
    cost = Cost(usd_per_gpu_hour=36.0)
    cpu = charge_rows(cost, num_gpus=0, batch_seconds=100.0, input_tokens=[1], output_tokens=[0])
    half = charge_rows(cost, num_gpus=0.5, batch_seconds=100.0, input_tokens=[1], output_tokens=[0])
    assert cpu[0].cost_usd == pytest.approx(1.0)
    assert half[0].cost_usd == pytest.approx(0.5)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        charge_rows(Cost(), 0, 1.0, [1, 2], [1])


def test_unanswered_rows_do_not_pay_the_per_item_price():
    cost = Cost(usd_per_item=0.5, usd_per_1k_input_tokens=1.0)
    rows = charge_rows(cost, 0, 0.0, [1000, 1000], [0, 0], answered=[True, False])
    assert rows[0].cost_usd == pytest.approx(1.5)
    assert rows[1].cost_usd == pytest.approx(1.0)
