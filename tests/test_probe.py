import numpy as np
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from hybrid_estimators import make_probe


def test_probe_is_the_seed_architecture():
    probe = make_probe()
    scaler, mlp = probe[0], probe[-1]
    assert isinstance(scaler, StandardScaler) and isinstance(mlp, MLPRegressor)
    assert mlp.hidden_layer_sizes == (256, 128)
    assert mlp.early_stopping and mlp.loss == "squared_error"


def test_probe_fits_every_dimension_and_stops_early():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 16))
    W = rng.normal(size=(16, 3))
    Y = X @ W
    probe = make_probe(hidden_layer_sizes=(32,)).fit(X[:300], Y[:300])
    assert probe.predict(X[300:]).shape == (100, 3)
    r2 = probe.score(X[300:], Y[300:])
    assert r2 > 0.9
    assert probe[-1].n_iter_ < probe[-1].max_iter  # early stopping fired
