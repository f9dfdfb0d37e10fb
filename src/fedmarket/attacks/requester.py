"""A requester that deviates to learn owners' records (docs/privacy.md): the attacks the privacy
tests and ``benchmarks/privacy.py`` play, over the protocol's crypto interface.

The requester holds the secret key and chooses every model. Each epoch it gets, per block, what
the product gives it: its model encrypted with ``encrypt_model`` (seeded, as owners re-encrypt
it), the block owner's noise from ``encrypt_noise`` at the task's std when the task is private,
the processors' ``run_program``, and ``decrypt_result`` with the honest bound plus the noise
allowance (``release``). The same code runs under CKKS and in the plaintext twin, whose noisy
totals are the numbers CKKS decrypts.

Two adversaries, both as strong as we could make them cheaply:

* **moments** (uninformed): with the cubic sigmoid ``p(z) = 1/2 + c1 z + c3 z^3`` every block
  total is a polynomial in the weights, ``g(w) = m1 + c1 M2 w + c3 M4(w, w, w, .)``, whose
  coefficients are the block's moment tensors (``m1 = sum (1/2 - y) x~``, ``M2 = sum x~ x~^T``,
  ``M4 = sum x~^(x)4``, ``x~ = (x, 1)``). ``MomentAttack`` solves the linear system of all
  observed totals for every distinct moment by least squares: exact without noise once there
  are as many equations as moments.
* **informed** (the reconstruction adversary of Balle, Cherubin and Hayes, S&P 2022): it knows
  every record of the block but one, subtracts their contributions (``informed_residuals``)
  and is left with one record's gradient plus the noise; it then fits the record by least
  squares (``least_squares_record``) or weighs candidate records by their likelihood
  (``log_likelihoods``), choosing each next model to separate the two likeliest
  (``separating_model``). Its success is bounded by ``rero_bound``: against a mu-GDP release,
  no guess restricted to a set S lands within eta of the target more often than
  ``Phi(Phi^-1(kappa) + mu)``, kappa the prior mass of the best eta-ball around a point of S
  (Kaissis, Hayes, Ziller, Rueckert 2023; Hayes, Mahloujifar, Balle, NeurIPS 2023).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import norm

from fedmarket.models.kinds.base import design_matrix
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial
from fedmarket.privacy.policy import noise_allowance

if TYPE_CHECKING:
    from fedmarket.protocol.crypto import PublicKeys, TaskKeys

REQUESTER, OWNER = "requester", "owner"


def model_seed(epoch: int) -> bytes:
    """The requester's seed for an epoch's model (what it reveals to owners with the weights)."""
    return hashlib.sha256(b"fm/attack/seed" + epoch.to_bytes(8, "big")).digest()


def release(
    keys: TaskKeys,
    block: bytes,
    weights: np.ndarray,
    *,
    epoch: int,
    block_id: str,
    n_samples: int,
    std: float,
    rng: random.Random,
) -> np.ndarray:
    """What the requester decrypts for one block and epoch under ``weights``: the model
    encrypted as the protocol does, the owner's noise (a private task only: its owner draws it
    from ``rng`` at ``std``), the processor's program, the requester's own decryption with the
    honest bound raised by the noise allowance. The totals, shaped like the weights."""
    public = keys.public
    W = np.asarray(weights, dtype=np.float64)
    model = keys.encrypt_model(W, epoch=epoch, seed=model_seed(epoch))
    noise = None
    if public.layout.private:
        noise = public.encrypt_noise(block_id=block_id, epoch=epoch, std=std, rng=rng)
    result = public.run_program(model, block, noise=noise, model_party=REQUESTER, block_party=OWNER)
    bound = public.layout.kind.max_abs_total(W, n_samples) + noise_allowance(std)
    return keys.decrypt_result(
        result, party="processor", epoch=epoch, block_id=block_id, bound=bound
    ).sums


def certified_models(
    public: PublicKeys, count: int, rng: np.random.Generator, *, radii: Sequence[float] = ()
) -> list[np.ndarray]:
    """``count`` random models in the kind's certified region (owners accept each of them):
    random directions, each row's reach set to a radius drawn from ``radii`` (default: spread
    over (0, guard radius], so linear and cubic terms separate)."""
    layout = public.layout
    kind, d = layout.kind, layout.n_features
    top = kind.guard_radius()
    choices = list(radii) or list(np.linspace(top / 8, top, 8))
    out = []
    for _ in range(count):
        W = rng.normal(size=layout.totals_shape)
        reach = kind.reach(W, d, layout.clip)
        target = np.array([choices[rng.integers(len(choices))] for _ in range(W.shape[0])])
        W = W * (target / np.maximum(reach, 1e-300))[:, None]
        out.append(kind.certify(W, d, layout.clip))
    return out


# ---- the uninformed moment attack ------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """A block's moments as the attack recovers them (``x~ = (x, 1)``, D lanes):
    ``m1 = sum (1/2 - y) x~``, ``pairs[(a, b)] = sum x~_a x~_b``, ``quads[(a, b, c, e)] =
    sum x~_a x~_b x~_c x~_e`` over index tuples in increasing order."""

    m1: np.ndarray
    pairs: dict[tuple[int, ...], float]
    quads: dict[tuple[int, ...], float]

    @property
    def lanes(self) -> int:
        return len(self.m1)

    def feature_sums(self) -> np.ndarray:
        """``sum x`` over the block (the pairs with the bias lane)."""
        D = self.lanes
        return np.array([self.pairs[(a, D - 1)] for a in range(D - 1)])

    def vector(self) -> np.ndarray:
        return np.concatenate([self.m1, list(self.pairs.values()), list(self.quads.values())])

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray) -> Moments:
        """The true moments of a block (what a perfect attack recovers)."""
        F = design_matrix(X)
        D = F.shape[1]
        m1 = ((0.5 - np.asarray(y, dtype=np.float64).reshape(-1))[:, None] * F).sum(axis=0)
        pairs: dict[tuple[int, ...], float] = {
            p: float(np.sum(F[:, p[0]] * F[:, p[1]]))
            for p in itertools.combinations_with_replacement(range(D), 2)
        }
        quads: dict[tuple[int, ...], float] = {
            q: float(np.sum(np.prod(F[:, list(q)], axis=1)))
            for q in itertools.combinations_with_replacement(range(D), 4)
        }
        return cls(m1, pairs, quads)


class MomentAttack:
    """Least squares on the moment equations of one binary-output sigmoid block: every
    observed total lane ``j`` at weights ``w`` is linear in the unknown moments,
    ``g_j(w) = m1_j + c1 sum_k w_k M2[j, k] + c3 sum_{k,l,m} w_k w_l w_m M4[j, k, l, m]``."""

    def __init__(self, lanes: int, poly: SigmoidPolynomial = DEFAULT_SIGMOID) -> None:
        self.lanes = lanes
        self.poly = poly
        combos = itertools.combinations_with_replacement
        self.pairs: list[tuple[int, ...]] = list(combos(range(lanes), 2))
        self.quads: list[tuple[int, ...]] = list(combos(range(lanes), 4))
        self._pair_at = {p: i for i, p in enumerate(self.pairs)}
        self._quad_at = {q: i for i, q in enumerate(self.quads)}

    @property
    def unknowns(self) -> int:
        return self.lanes + len(self.pairs) + len(self.quads)

    def design(self, models: Sequence[np.ndarray]) -> np.ndarray:
        """The (epochs * lanes, unknowns) matrix of the equations the totals of ``models``
        satisfy, rows in (epoch, lane) order."""
        D = self.lanes
        c1, c3 = self.poly.c1, self.poly.c3
        P = len(self.pairs)
        rows = np.zeros((len(models) * D, self.unknowns))
        triples = list(itertools.product(range(D), repeat=3))
        for t, W in enumerate(models):
            w = np.asarray(W, dtype=np.float64).reshape(-1)
            if w.shape != (D,):
                raise ValueError(f"the moment attack takes one output of {D} weights")
            cubes = {k: w[k[0]] * w[k[1]] * w[k[2]] for k in triples}
            for j in range(D):
                row = rows[t * D + j]
                row[j] = 1.0
                for k in range(D):
                    row[D + self._pair_at[tuple(sorted((j, k)))]] += c1 * w[k]
                for triple, value in cubes.items():
                    row[D + P + self._quad_at[tuple(sorted((j, *triple)))]] += c3 * value
        return rows

    def solve(self, models: Sequence[np.ndarray], totals: Sequence[np.ndarray]) -> Moments:
        """The moments that best explain ``totals`` (least squares, minimum norm)."""
        A = self.design(models)
        b = np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1) for g in totals])
        theta = np.linalg.lstsq(A, b, rcond=None)[0]
        return self.unpack(theta)

    def unpack(self, theta: np.ndarray) -> Moments:
        D, P = self.lanes, len(self.pairs)
        return Moments(
            np.array(theta[:D]),
            dict(zip(self.pairs, map(float, theta[D : D + P]), strict=True)),
            dict(zip(self.quads, map(float, theta[D + P :]), strict=True)),
        )

    def covariance(self, models: Sequence[np.ndarray], std: float) -> np.ndarray:
        """The least-squares estimate's covariance under i.i.d. noise of ``std`` per total."""
        A = self.design(models)
        return std**2 * np.linalg.pinv(A.T @ A)


# ---- the informed adversary -----------------------------------------------------------------
def contributions(
    weights: np.ndarray, X: np.ndarray, y: np.ndarray, poly: SigmoidPolynomial = DEFAULT_SIGMOID
) -> np.ndarray:
    """(records, epochs, lanes): what each candidate record ``(X[i], y[i])`` adds to a block's
    totals under each model of ``weights`` (epochs, lanes), one binary sigmoid output."""
    F = design_matrix(X)
    W = np.asarray(weights, dtype=np.float64).reshape(-1, F.shape[1])
    h = poly(F @ W.T) - np.asarray(y, dtype=np.float64).reshape(-1, 1)
    return h[:, :, None] * F[:, None, :]


def informed_residuals(
    public: PublicKeys,
    models: Sequence[np.ndarray],
    totals: Sequence[np.ndarray],
    X_known: np.ndarray,
    targets_known: np.ndarray,
) -> np.ndarray:
    """(epochs, lanes): the totals minus what the records the adversary knows contribute (the
    kind's own ``gradient_sums``): one record's gradient plus the owner's noise."""
    kind = public.layout.kind
    return np.array(
        [
            np.asarray(g, dtype=np.float64).reshape(-1)
            - kind.gradient_sums(W, X_known, targets_known).reshape(-1)
            for W, g in zip(models, totals, strict=True)
        ]
    )


def log_likelihoods(
    models: Sequence[np.ndarray],
    residuals: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    std: float,
) -> np.ndarray:
    """Per candidate record, the log-likelihood of the residuals under Gaussian noise of ``std``
    (a floor of 1e-6 stands for "no noise": the best fit wins)."""
    if not models:
        return np.zeros(len(X))
    C = contributions(np.array(models), X, y)
    sq = np.sum((C - residuals[None, :, :]) ** 2, axis=(1, 2))
    return -sq / (2.0 * max(std, 1e-6) ** 2)


def separating_model(
    public: PublicKeys,
    a: tuple[np.ndarray, float],
    b: tuple[np.ndarray, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """The certified model under which candidate records ``a`` and ``b`` (features, label)
    differ most in what they add to the totals: a search over the direction between them and
    random directions, signs, reaches up to the region's boundary, and splits of the reach
    between the features and the bias (every candidate lies in the certified region by
    construction: its reach ``||w[:d]|| C + |b|`` is at most the guard radius)."""
    layout = public.layout
    d, clip = layout.n_features, layout.clip
    top = layout.kind.guard_radius()
    diff = a[0] - b[0]
    U = np.vstack([diff[None, :], rng.normal(size=(16, d))])
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    grid = np.array(list(itertools.product((1.0, -1.0), (2.0, 4.0, 5.6, top), (1.0, 0.7))))
    sign, reach, share = grid[:, 0], grid[:, 1], grid[:, 2]
    bias_sign = np.where(rng.random(len(U) * len(grid)) < 0.5, 1.0, -1.0)
    features = (U[:, None, :] * (sign * share * reach / clip)[None, :, None]).reshape(-1, d)
    bias = np.tile((1.0 - share) * reach, len(U)) * bias_sign
    stack = np.hstack([features, bias[:, None]]) * (1.0 - 1e-12)  # inside, not on, the edge
    C = contributions(stack, np.array([a[0], b[0]]), np.array([a[1], b[1]]))
    gap = np.sum((C[0] - C[1]) ** 2, axis=1)
    return stack[int(np.argmax(gap))][None, :]


def least_squares_record(
    models: Sequence[np.ndarray], residuals: np.ndarray, clip: float
) -> tuple[np.ndarray, float]:
    """The record (features, label) whose gradient best fits the residuals: nonlinear least
    squares from the one-epoch closed form (``x = r[:d] / r[d]``: the bias lane gives the
    scale) for each label, the better fit kept, projected into the clip ball."""
    W = np.array([np.asarray(m, dtype=np.float64).reshape(-1) for m in models])
    d = W.shape[1] - 1
    best: tuple[float, np.ndarray, float] | None = None
    ratios = residuals[:, :d] / np.where(np.abs(residuals[:, d:]) > 1e-9, residuals[:, d:], np.inf)
    start = np.median(ratios, axis=0)
    starts = [np.zeros(d), _into_ball(start, clip)]
    for label in (0.0, 1.0):

        def misfit(x: np.ndarray, label: float = label) -> np.ndarray:
            c = contributions(W, x[None, :], np.array([label]))[0]
            return (c - residuals).reshape(-1)

        for x0 in starts:
            fit = least_squares(
                misfit, x0, method="lm" if len(residuals.reshape(-1)) >= d else "trf"
            )
            x = _into_ball(fit.x, clip)
            cost = float(np.sum(misfit(x) ** 2))
            if best is None or cost < best[0]:
                best = (cost, x, label)
    assert best is not None
    return best[1], best[2]


def _into_ball(x: np.ndarray, radius: float) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=radius, neginf=-radius)
    x = np.clip(x, -1.0, 1.0)
    n = float(np.linalg.norm(x))
    return x if n <= radius else x * (radius / n)


# ---- the bound --------------------------------------------------------------------------------
def gdp_mu(noise_multiplier: float, releases: int) -> float:
    """mu of ``releases`` Gaussian releases of noise multiplier sigma: ``sqrt(T) / sigma``."""
    return math.sqrt(releases) / noise_multiplier


def rero_bound(kappa: float, mu: float) -> float:
    """The most often any guess (from a set whose best eta-ball has prior mass ``kappa``) lands
    within eta of the target, against a mu-GDP mechanism: ``Phi(Phi^-1(kappa) + mu)``."""
    if not 0.0 < kappa < 1.0:
        return 1.0 if kappa >= 1.0 else 0.0
    return float(norm.cdf(norm.ppf(kappa) + mu))


def binomial_slack(p: float, trials: int, sigmas: float = 3.0) -> float:
    """``sigmas`` standard errors of a success rate ``p`` measured over ``trials``."""
    return sigmas * math.sqrt(max(p * (1.0 - p), 1.0 / trials) / trials)


def ball_mass(X: np.ndarray, eta: float) -> np.ndarray:
    """(n, n) 0/1: record j lies within ``eta`` of record i (L2 on the features)."""
    gaps = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=2)
    return (gaps <= eta).astype(np.float64)


def kappa(within: np.ndarray) -> float:
    """The prior's own success: the largest share of a uniform population within eta of one of
    its points (``within`` from ``ball_mass``)."""
    return float(np.max(within.mean(axis=1)))


# ---- the games --------------------------------------------------------------------------------
@dataclass(frozen=True)
class GameResult:
    """Success rates over ``trials`` of a reconstruction game (see ``reconstruction_game``)."""

    trials: int
    membership: float = 0.0  # the likeliest candidate was the target
    bayes: float = 0.0  # the Bayes guess landed within eta of the target
    snapped: float = 0.0  # the least-squares fit, snapped to the population, did
    ls_errors: tuple[float, ...] = ()  # L2 error of each least-squares fit

    @property
    def ls_error_median(self) -> float:
        return float(np.median(self.ls_errors)) if self.ls_errors else float("nan")


def reconstruction_game(
    keys: TaskKeys,
    std: float,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    trials: int,
    block_size: int,
    candidates: int | None = None,
    eta: float = 0.0,
    seed: int = 0,
    weight_scale: float = 1.0,
) -> GameResult:
    """The informed adversary's game on a population (``X``, ``y``: rows as owners encrypt
    them). Each trial the victim's block is ``block_size - 1`` population records the requester
    knows plus a target; the requester gets ``epochs`` releases of the block (``release``) and
    guesses.

    ``candidates`` = k: the target is one of k further population records, all known to the
    requester (membership); each epoch's model separates the two likeliest candidates so far
    (``separating_model``); the guess is the likeliest. None: the target is any population record
    (uniform prior); random certified models; two guesses, both population records: the one with
    the most posterior mass within ``eta`` (Bayes), and the least-squares fit snapped to the
    nearest record. The owners' noise comes from a ``random.Random(seed)``, the requester's
    choices from ``numpy``'s generator of ``seed``.

    ``weight_scale`` > 1 plays the requester the owners' check stops: every model scaled out of
    the certified region (what the totals would give if owners released noise for it; they
    refuse, ``check_revealed_model``), so one sample moves the totals by more than the noise
    was calibrated for."""
    public = keys.public
    layout = public.layout
    rng = np.random.default_rng(seed)
    owner = random.Random(seed)
    within = ball_mass(X, eta) if candidates is None else None
    wins = {"membership": 0, "bayes": 0, "snapped": 0}
    errors: list[float] = []
    lanes = layout.n_features + 1
    for _ in range(trials):
        pool = rng.permutation(len(X))
        known = pool[: block_size - 1]
        if candidates is None:
            options = np.arange(len(X))
            target = int(rng.integers(len(X)))
        else:
            options = pool[block_size - 1 : block_size - 1 + candidates]
            target = int(options[rng.integers(candidates)])
        rows = np.append(known, target)
        block = public.encrypt_block(X[rows], y[rows], block_id="victim")
        targets_known = y[known][:, None]
        models: list[np.ndarray] = []
        totals: list[np.ndarray] = []
        seen = np.zeros((0, lanes))  # the residuals so far
        for epoch in range(epochs):
            if candidates is None:
                W = certified_models(public, 1, rng)[0]
            else:
                scores = log_likelihoods(models, seen, X[options], y[options], std)
                a, b = np.argsort(-scores, kind="stable")[:2]
                W = separating_model(
                    public, (X[options[a]], y[options[a]]), (X[options[b]], y[options[b]]), rng
                )
            W = W * weight_scale
            problem = layout.kind.certify_problem(W, layout.n_features, layout.clip)
            if (problem is None) != (weight_scale <= 1.0):  # owners refuse exactly these
                raise AssertionError(f"a model owners would treat otherwise: {problem}")
            models.append(W)
            totals.append(
                release(
                    keys,
                    block,
                    W,
                    epoch=epoch,
                    block_id="victim",
                    n_samples=block_size,
                    std=std,
                    rng=owner,
                )
            )
            step = informed_residuals(public, [W], totals[-1:], X[known], targets_known)
            seen = np.vstack([seen, step])
        residuals = seen
        scores = log_likelihoods(models, residuals, X[options], y[options], std)
        if candidates is not None:
            wins["membership"] += int(options[int(np.argmax(scores))] == target)
            continue
        assert within is not None
        posterior = np.exp(scores - scores.max())
        guess = int(np.argmax(within @ posterior))
        wins["bayes"] += int(within[guess, target])
        x_hat, _ = least_squares_record(models, residuals, layout.clip)
        errors.append(float(np.linalg.norm(x_hat - X[target])))
        snapped = int(np.argmin(np.linalg.norm(X - x_hat, axis=1)))
        wins["snapped"] += int(within[snapped, target])
    return GameResult(
        trials,
        membership=wins["membership"] / trials,
        bayes=wins["bayes"] / trials,
        snapped=wins["snapped"] / trials,
        ls_errors=tuple(errors),
    )
