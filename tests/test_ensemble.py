"""TemporalEnsemble: per-instance EMA of the weights with startup bias correction (SPEC §2)."""

from __future__ import annotations

import io

import pytest
import torch

from lossattn import TemporalEnsemble

BETA = 0.6
SIZES = [1, 3, 5, 2]


def layout(sizes, N, *, holes, seed):
    """mask (B, N) with the given numbers of real instances, at random sorted positions or first."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(sizes), N, dtype=torch.bool)
    for i, n in enumerate(sizes):
        pos = torch.randperm(N, generator=g)[:n] if holes else torch.arange(n)
        mask[i, pos] = True
    return mask


def scatter(values, mask, fill=0.0):
    """Per-bag value lists → (B, N) tensor laid out by ``mask``."""
    out = torch.full(mask.shape, fill, dtype=torch.float64)
    for i, v in enumerate(values):
        out[i, mask[i]] = torch.as_tensor(v, dtype=torch.float64)
    return out


def random_weights(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), 0) for n in sizes]


def run_epoch(ens, weights, *, order, N=6, holes=True, seed=0, batch_size=2):
    """Record the given per-bag weights in mini-batches of ``order`` with padding, then step."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        mask = layout([SIZES[i] for i in idx], N, holes=holes, seed=seed + start)
        w = scatter([weights[i] for i in idx], mask, fill=7.0)  # garbage at padding
        ens.record(torch.tensor(idx), w, mask)
    ens.step()


def targets(ens, idx, mask):
    t = ens.target(torch.tensor(idx), mask)
    return [t[r, mask[r]].double() for r in range(len(idx))], t


def test_not_ready_before_first_epoch():
    ens = TemporalEnsemble(SIZES, BETA)
    assert not ens.ready
    assert ens.target(torch.tensor([0, 1]), layout([1, 3], 4, holes=False, seed=0)) is None
    assert len(ens) == 4


def test_one_epoch_bias_corrected_value_equals_that_epochs_weights():
    ens = TemporalEnsemble(SIZES, BETA)
    w1 = random_weights(SIZES, 1)
    run_epoch(ens, w1, order=[2, 0, 3, 1])
    assert ens.ready
    idx = [1, 3, 0, 2]
    mask = layout([SIZES[i] for i in idx], 7, holes=True, seed=42)
    got, full = targets(ens, idx, mask)
    assert full.shape == mask.shape
    assert full[~mask].eq(0).all()
    for r, i in enumerate(idx):
        torch.testing.assert_close(got[r], w1[i], atol=1e-7, rtol=1e-6)


def test_two_and_three_epochs_hand_computed():
    ens = TemporalEnsemble(SIZES, BETA)
    w1, w2, w3 = (random_weights(SIZES, s) for s in (1, 2, 3))
    run_epoch(ens, w1, order=[0, 1, 2, 3], seed=0)
    run_epoch(ens, w2, order=[3, 2, 1, 0], seed=10)
    idx = [0, 1, 2, 3]
    mask = layout(SIZES, 5, holes=False, seed=0)
    got, _ = targets(ens, idx, mask)
    for i in idx:
        A = BETA * (1 - BETA) * w1[i] + (1 - BETA) * w2[i]
        torch.testing.assert_close(got[i], A / (1 - BETA**2), atol=1e-7, rtol=1e-6)
    # third epoch, bag 1 not seen: its average and its bias correction stay those of two updates
    run_epoch(ens, w3, order=[0, 2, 3], seed=20)
    got, _ = targets(ens, idx, mask)
    for i in idx:
        if i == 1:
            want = (BETA * (1 - BETA) * w1[i] + (1 - BETA) * w2[i]) / (1 - BETA**2)
        else:
            A = BETA**2 * (1 - BETA) * w1[i] + BETA * (1 - BETA) * w2[i] + (1 - BETA) * w3[i]
            want = A / (1 - BETA**3)
        torch.testing.assert_close(got[i], want, atol=1e-7, rtol=1e-6)


def test_bag_not_updated_yet_gets_zero_target():
    ens = TemporalEnsemble(SIZES, BETA)
    w1 = random_weights(SIZES, 1)
    run_epoch(ens, w1, order=[0, 2])
    mask = layout([3, 5], 6, holes=True, seed=3)
    got, full = targets(ens, [1, 2], mask)
    assert full[0].eq(0).all()
    torch.testing.assert_close(got[1], w1[2], atol=1e-7, rtol=1e-6)


def test_padding_layouts_map_to_the_same_slots():
    ens = TemporalEnsemble(SIZES, BETA)
    w1 = random_weights(SIZES, 5)
    run_epoch(ens, w1, order=[0, 1, 2, 3], holes=True, N=9, seed=77)
    idx = [2, 1, 3, 0]
    a, _ = targets(ens, idx, layout([SIZES[i] for i in idx], 5, holes=False, seed=0))
    b, _ = targets(ens, idx, layout([SIZES[i] for i in idx], 12, holes=True, seed=123))
    for r, i in enumerate(idx):
        torch.testing.assert_close(a[r], b[r], rtol=0, atol=0)
        torch.testing.assert_close(a[r], w1[i], atol=1e-7, rtol=1e-6)


def test_target_is_in_order_of_real_instances():
    ens = TemporalEnsemble([3], 0.0)  # β = 0: the target is the last epoch's weights
    mask = torch.tensor([[False, True, False, True, True]])
    ens.record(torch.tensor([0]), torch.tensor([[9.0, 0.1, 9.0, 0.2, 0.7]]), mask)
    ens.step()
    t = ens.target(torch.tensor([0]), torch.tensor([[True, True, True]]))
    torch.testing.assert_close(t, torch.tensor([[0.1, 0.2, 0.7]]))


def test_state_dict_round_trip_resumes_identically():
    a = TemporalEnsemble(SIZES, BETA)
    w1, w2, w3 = (random_weights(SIZES, s) for s in (1, 2, 3))
    run_epoch(a, w1, order=[0, 1, 2, 3])
    # mid-epoch save: bags 0 and 1 recorded, not yet folded in
    mask = layout([SIZES[0], SIZES[1]], 4, holes=True, seed=8)
    a.record(torch.tensor([0, 1]), scatter([w2[0], w2[1]], mask), mask)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = TemporalEnsemble(SIZES, momentum=0.9)  # momentum comes from the state
    b.load_state_dict(torch.load(buffer))
    assert b.momentum == BETA
    for ens in (a, b):
        mask = layout([SIZES[2], SIZES[3]], 6, holes=True, seed=9)
        ens.record(torch.tensor([2, 3]), scatter([w2[2], w2[3]], mask), mask)
        ens.step()
        run_epoch(ens, w3, order=[3, 1, 0])
    idx = [0, 1, 2, 3]
    mask = layout(SIZES, 6, holes=True, seed=10)
    assert torch.equal(a.target(torch.tensor(idx), mask), b.target(torch.tensor(idx), mask))
    # and the values are the hand-computed ones (bag 2 had two updates, the others three)
    got, _ = targets(b, idx, mask)
    A2 = (BETA * (1 - BETA) * w1[2] + (1 - BETA) * w2[2]) / (1 - BETA**2)
    torch.testing.assert_close(got[2], A2, atol=1e-7, rtol=1e-6)
    A0 = (BETA**2 * (1 - BETA) * w1[0] + BETA * (1 - BETA) * w2[0] + (1 - BETA) * w3[0]) / (1 - BETA**3)
    torch.testing.assert_close(got[0], A0, atol=1e-7, rtol=1e-6)


def test_state_dict_is_a_copy():
    ens = TemporalEnsemble([2], BETA)
    state = ens.state_dict()
    mask = torch.ones(1, 2, dtype=torch.bool)
    ens.record(torch.tensor([0]), torch.tensor([[0.3, 0.7]]), mask)
    ens.step()
    assert state["values"].eq(0).all() and state["updates"].eq(0).all()


def test_load_state_dict_for_other_bag_sizes_fails():
    state = TemporalEnsemble([2, 3]).state_dict()
    with pytest.raises(ValueError, match="different bag sizes"):
        TemporalEnsemble([2, 4]).load_state_dict(state)


def test_errors():
    ens = TemporalEnsemble(SIZES, BETA)
    mask = layout([3, 5], 6, holes=True, seed=0)
    w = torch.rand(2, 6)
    with pytest.raises(ValueError, match=r"bag 2 has 3 real instances in this batch but 5 were registered"):
        ens.record(torch.tensor([1, 2]), w, layout([3, 3], 6, holes=False, seed=0))
    with pytest.raises(ValueError, match=r"bag 2 has 4 real instances in this batch but 5 were registered"):
        ens.record(torch.tensor([1, 2]), w, layout([3, 4], 6, holes=False, seed=0))
    with pytest.raises(ValueError, match=r"bag indices must be in 0\.\.3"):
        ens.record(torch.tensor([1, 4]), w, mask)
    with pytest.raises(ValueError, match=r"bag indices must be in 0\.\.3"):
        ens.record(torch.tensor([-1, 2]), w, mask)
    with pytest.raises(ValueError, match=r"expected bag_indices \(B,\) and mask \(B, N\)"):
        ens.record(torch.tensor([1, 2, 3]), w, mask)
    ens.record(torch.tensor([1, 2]), w, mask)
    ens.step()
    with pytest.raises(ValueError, match=r"bag indices must be in 0\.\.3"):
        ens.target(torch.tensor([7, 2]), mask)
    for momentum in (1.0, -0.1):
        with pytest.raises(ValueError, match="momentum must be in"):
            TemporalEnsemble(SIZES, momentum)
    for sizes in ([2, 0], [[1, 2]]):
        with pytest.raises(ValueError, match="positive instance counts"):
            TemporalEnsemble(sizes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_target_lives_on_the_mask_device():
    ens = TemporalEnsemble([2], BETA)
    mask = torch.ones(1, 2, dtype=torch.bool, device="cuda")
    ens.record(torch.tensor([0]), torch.tensor([[0.3, 0.7]], device="cuda"), mask)
    ens.step()
    t = ens.target(torch.tensor([0]), mask)
    assert t.device == mask.device
    torch.testing.assert_close(t.cpu(), torch.tensor([[0.3, 0.7]]))
