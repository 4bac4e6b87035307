"""SequenceDataset: collation and padding, splits, minibatches, standardisation."""

import json

import numpy as np
import pytest
import torch

from dynvae.data import Sequence, SequenceBatch, SequenceDataset, Standardizer, collate
from dynvae.errors import ConfigError, DataError


def make_dataset(n=5, D=2, U=0, seed=0):
    rng = np.random.default_rng(seed)
    seqs = []
    for i in range(n):
        T = 1 + (3 * i) % 7
        x = rng.standard_normal((T, D)) * 3 + 10
        x[rng.random((T, D)) < 0.3] = np.nan
        x[0, 0] = 1.0 + i
        t = np.cumsum(rng.uniform(0.1, 2.0, T)) + 100.0
        u = rng.standard_normal((T, U)) if U else None
        seqs.append(Sequence(t=t, x=x, u=u, id=f"s{i}"))
    return SequenceDataset(seqs, [f"f{d}" for d in range(D)], [f"u{k}" for k in range(U)])


def test_collate_pads_values_mask_times_and_inputs():
    ds = make_dataset(n=4, U=1)
    batch = ds.to_batch(dtype=torch.float64)
    assert isinstance(batch, SequenceBatch)
    lengths = ds.lengths
    T = lengths.max()
    assert batch.x.shape == (4, T, 2) and batch.u.shape == (4, T, 1)
    assert batch.t.dtype == torch.float64
    assert batch.lengths.tolist() == lengths.tolist()
    assert torch.equal(batch.valid, torch.arange(T)[None, :] < torch.as_tensor(lengths)[:, None])
    for b, seq in enumerate(ds):
        L = len(seq)
        np.testing.assert_array_equal(batch.mask[b, :L].numpy(), ~np.isnan(seq.x))
        np.testing.assert_array_equal(batch.x[b, :L].numpy(), np.nan_to_num(seq.x, nan=0.0))
        np.testing.assert_array_equal(batch.t[b, :L].numpy(), seq.t)
        np.testing.assert_array_equal(batch.u[b, :L].numpy(), seq.u)
        assert not batch.mask[b, L:].any()
        assert (batch.x[b, L:] == 0).all() and (batch.u[b, L:] == 0).all()
        assert (batch.t[b, 1:] > batch.t[b, :-1]).all()          # padded times keep increasing
        if L > 1 and L < T:
            step = seq.t[-1] - seq.t[-2]
            np.testing.assert_allclose(batch.t[b, L:].numpy(),
                                       seq.t[-1] + step * np.arange(1, T - L + 1))


def test_to_batch_selects_indices_dtype_and_one_step_sequences():
    ds = make_dataset(n=4)
    batch = ds.to_batch([3, 0])
    assert batch.x.dtype == torch.float32 and batch.u is None
    assert batch.lengths.tolist() == [len(ds[3]), len(ds[0])]
    assert len(ds[0]) == 1
    expected = [ds[0].t[0] + k for k in range(1, batch.n_steps)]
    np.testing.assert_allclose(batch.t[1, 1:].numpy(), expected, rtol=1e-6)


def test_collate_rejects_times_that_merge_in_float32():
    seq = Sequence(t=[1e8, 1e8 + 1], x=[[1.0], [2.0]], id="late")
    with pytest.raises(DataError, match=r"sequence 'late' are not distinct in torch.float32"):
        collate([seq])
    assert collate([seq], dtype=torch.float64).t[0, 1] == 1e8 + 1
    with pytest.raises(DataError, match="empty list"):
        collate([])


def test_getitem_len_dim_iteration():
    ds = make_dataset(n=6, D=3)
    assert len(ds) == 6 and ds.dim == 3 and ds.input_dim == 0
    assert ds[2].id == "s2" and ds[np.int64(2)].id == "s2"
    assert ds[1:3].ids == ["s1", "s2"] and ds[[4, 0]].ids == ["s4", "s0"]
    assert ds[np.arange(6) % 2 == 1].ids == ["s1", "s3", "s5"]
    with pytest.raises(DataError, match=r"boolean index must have shape \(6,\)"):
        ds[[True, False]]
    assert ds[1:3].feature_names == ds.feature_names
    assert [s.id for s in ds] == ds.ids


def test_split_is_deterministic_disjoint_and_covers_everything():
    ds = make_dataset(n=23)
    parts = ds.split((0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [19, 2, 2]       # largest remainder of 18.4, 2.3, 2.3
    ids = [i for p in parts for i in p.ids]
    assert sorted(ids) == sorted(ds.ids) and len(set(ids)) == 23
    again = ds.split((0.8, 0.1, 0.1), seed=3)
    assert [p.ids for p in again] == [p.ids for p in parts]
    other = ds.split((0.8, 0.1, 0.1), seed=4)
    assert [p.ids for p in other] != [p.ids for p in parts]
    assert all(len(p) >= 1 for p in make_dataset(n=3).split((0.98, 0.01, 0.01)))
    assert ds.split((1.0,))[0].ids == ds.ids


def test_split_errors():
    one = make_dataset(n=1)
    with pytest.raises(DataError, match=r"cannot split 1 sequence\(s\) into 3 non-empty parts"):
        one.split()
    with pytest.raises(ConfigError, match="positive and sum to 1"):
        make_dataset(n=5).split((0.5, 0.4))
    with pytest.raises(ConfigError, match="positive and sum to 1"):
        make_dataset(n=5).split((1.2, -0.2))


def test_batches_cover_every_sequence_once():
    ds = make_dataset(n=7)
    batches = list(ds.batches(3))
    assert [b.batch_size for b in batches] == [3, 3, 1]
    g = torch.Generator().manual_seed(0)
    shuffled = list(ds.batches(2, shuffle=True, generator=g, dtype=torch.float64))
    firsts = sorted(float(b.x[i, 0, 0]) for b in shuffled for i in range(b.batch_size))
    assert firsts == [1.0 + i for i in range(7)]
    g2 = torch.Generator().manual_seed(0)
    again = list(ds.batches(2, shuffle=True, generator=g2, dtype=torch.float64))
    assert all(torch.equal(a.x, b.x) for a, b in zip(shuffled, again, strict=True))
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        next(ds.batches(0))


def test_dataset_validation():
    s = Sequence(t=[0.0, 1.0], x=[[1.0], [2.0]], id="a")
    with pytest.raises(DataError, match="duplicate sequence id 'a'"):
        SequenceDataset([s, s], ["v"])
    with pytest.raises(DataError, match=r"sequence 'a' has 1 features, the dataset has 2"):
        SequenceDataset([s], ["v", "w"])
    with pytest.raises(DataError, match=r"sequence 'a' has 0 inputs, the dataset has 1"):
        SequenceDataset([s], ["v"], ["u"])
    with pytest.raises(DataError, match=r"values of sequence 'b' must have shape \(T, D\)"):
        Sequence(t=[0.0, 1.0], x=[1.0, 2.0], id="b")
    with pytest.raises(DataError, match=r"sequence 'c' has no time steps"):
        Sequence(t=np.zeros(0), x=np.zeros((0, 1)), id="c")


# -------------------------------------------------------------- standardiser
def test_standardizer_uses_observed_entries_only_and_inverts_exactly():
    ds = make_dataset(n=6, D=2)
    st = Standardizer().fit(ds)
    x = np.concatenate([s.x for s in ds])
    for d in range(2):
        obs = x[:, d][~np.isnan(x[:, d])]
        np.testing.assert_allclose(st.mean[d], obs.mean(), rtol=1e-14)
        np.testing.assert_allclose(st.std[d], obs.std(), rtol=1e-14)
    z = st.transform(ds)
    zx = np.concatenate([s.x for s in z])
    np.testing.assert_array_equal(np.isnan(zx), np.isnan(x))
    np.testing.assert_allclose(np.nanmean(zx, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(zx, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(st.inverse_mean(zx), x, rtol=1e-13)
    np.testing.assert_allclose(np.concatenate([s.x for s in st.inverse_transform(z)]), x,
                               rtol=1e-13)
    np.testing.assert_allclose(st.inverse_std(np.ones(2)), st.std, rtol=0)


def test_standardizer_torch_state_dict_and_degenerate_features():
    seqs = [Sequence(t=[0.0, 1.0, 2.0], x=[[5.0, np.nan, 1.0], [5.0, np.nan, np.nan],
                                           [5.0, np.nan, 3.0]], id="a")]
    ds = SequenceDataset(seqs, ["const", "never", "v"])
    st = Standardizer().fit(ds)
    np.testing.assert_array_equal(st.mean, [5.0, 0.0, 2.0])
    np.testing.assert_array_equal(st.std, [1.0, 1.0, 1.0])
    state = json.loads(json.dumps(st.state_dict()))
    back = Standardizer.from_state_dict(state)
    assert back.feature_names == ["const", "never", "v"]
    mean = torch.zeros(4, 7, 3, dtype=torch.float32)
    out = back.inverse_mean(mean)
    assert out.dtype == torch.float32 and out.shape == (4, 7, 3)
    assert out[0, 0].tolist() == [5.0, 0.0, 2.0]
    assert torch.equal(back.inverse_std(torch.ones(2, 3)), torch.ones(2, 3))


def test_standardizer_errors():
    with pytest.raises(ConfigError, match="not fitted"):
        Standardizer().transform(make_dataset())
    with pytest.raises(DataError, match=r"data has 3 features \['f0', 'f1', 'f2'\], the "
                       r"Standardizer was fitted on 2 \['f0', 'f1'\] \(on the command line, "
                       r"--value-cols"):
        Standardizer().fit(make_dataset(D=2)).transform(make_dataset(D=3))
    with pytest.raises(ConfigError, match=r"lacks \['std'\]"):
        Standardizer.from_state_dict({"mean": [0.0]})
    with pytest.raises(ConfigError, match="std finite and > 0"):
        Standardizer.from_state_dict({"mean": [0.0], "std": [0.0]})


def test_to_frame_round_trips_through_from_dataframe():
    from dynvae.data import from_dataframe
    ds = make_dataset(n=3, U=2)
    back = from_dataframe(ds.to_frame(), id_col="id", time_col="t",
                          value_cols=ds.feature_names, input_cols=ds.input_names)
    assert back.ids == ds.ids
    for a, b in zip(ds, back, strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.t, b.t)
        np.testing.assert_array_equal(a.u, b.u)


def test_standardizer_refuses_its_features_in_another_order():
    ds = make_dataset(D=2)
    st = Standardizer().fit(ds)
    swapped = SequenceDataset(ds.sequences, ["f1", "f0"])
    with pytest.raises(DataError, match=r"another order; give them in the order \['f0', 'f1'\]"):
        st.transform(swapped)
    with pytest.raises(DataError, match="another order"):
        st.inverse_transform(swapped)
    renamed = SequenceDataset(ds.sequences, ["a", "b"])     # other names: matched by position
    np.testing.assert_allclose(st.transform(renamed)[0].x, st.transform(ds)[0].x)
