"""Privacy against a requester who deviates (issue 14), measured: ``make bench-privacy``.

(1) Attacks. Per attack class, the best reconstruction error (or success rate) the attack
    reaches without the defences and with them, every one actually attempted:

    * structural attacks (key substitution, tiny totals, per-slot crafted models, routing) on
      the product's own code: the whole protocol through ``fedmarket.run.run_task`` (plaintext
      twin crypto, in-memory ledger) with a transport that plays the requester relaying
      messages, as ``tests/privacy/test_guards.py`` does; the crypto layer's refusals; the
      crafted model under real CKKS. "Without" is what the attack gives when the defence is
      absent: the requester holds the secret key of every ciphertext, so a block or a
      one-sample total it can open is the record itself (error 0, measured where the product
      still allows the configuration, e.g. a non-private task's one-sample block);
    * statistical attacks (``fedmarket.attacks.requester``) against the owners' noise: the
      moment attack (least squares on the moment equations over T = max_epochs certified
      models), the informed reconstruction (all records of the block but one known) and
      informed membership (the missing record one of 16 candidates, models chosen
      adaptively), each without noise and at epsilon 8 / 3 / 1 (delta 1e-5, T = 30), against
      the mu-GDP reconstruction bound ``Phi(Phi^-1(kappa) + sqrt(T)/sigma)``.

(2) Accuracy cost of the defaults: ``run_task`` with the plaintext twin crypto (it differs
    from CKKS only in the crypto: same driver, roles, owners' clip and noise, accountant) on
    breast cancer, digits and Framingham as ``fedmarket init`` makes their specs (the
    examples' parties, 10 epochs, a quarter of the rows held out as a test split), privacy off
    (the baseline, measured in the same run) and ``[privacy] enabled = true, epsilon = 8 / 3 /
    1``. Test accuracy (Framingham: also AUC, its accuracy is the majority rate); medians over
    ``--seeds`` seeds of the split and the deal (owners' noise is fresh each run); the ratio of
    each private median to the baseline's.

Writes ``benchmarks/results/privacy.json`` and prints the tables.
Run: ``make bench-privacy`` (``--quick``: fewer trials and seeds, a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from fedmarket.attacks import requester as attack
from fedmarket.backbone import task_features
from fedmarket.chain.signing import sign_channel_key, sign_noise
from fedmarket.data import scale, scaler
from fedmarket.errors import ConfigError, FedmarketError, UntrustedInputError
from fedmarket.privacy.owner import check_revealed_model, clip_rows
from fedmarket.privacy.policy import crypto_privacy, noise_std
from fedmarket.protocol.crypto import Crypto, Privacy, TaskKeys
from fedmarket.protocol.party import PartyNode
from fedmarket.protocol.plaintext import Plaintext
from fedmarket.protocol.transport import Envelope
from fedmarket.roles.channel import ChannelKeys, open_sealed, seal
from fedmarket.roles.messages import (
    ChannelKey,
    DataManifest,
    NoiseRelease,
    RoutingShare,
    SealedBlock,
    decode,
    encode,
)
from fedmarket.roles.owner import block_bounds, check_layout
from fedmarket.run import run_task
from fedmarket.runtime.local import LocalTransport
from fedmarket.spec import SpecFile, load_spec
from fedmarket.starter import starter_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results" / "privacy.json"
FRAMINGHAM = Path(
    os.environ.get("FEDMARKET_FRAMINGHAM", ROOT.parent / "shared" / "data" / "framingham.csv")
)
EPSILONS = (8.0, 3.0, 1.0)
EPOCHS = 30  # the attacks' task.max_epochs (the design's cap)
FLOOR = 64
SMALL = (0, 1, 4, 6)  # 4 breast-cancer features (5 lanes): the moment system is solvable
ALL = tuple(range(30))
TEN = tuple(range(10))  # the "mean" features: membership
ETA = 0.25  # success radius of the informed reconstruction (4 features)
K = 16  # membership candidates
HUGE = 5.0  # how far out of the certified region the huge-weights attack goes
DATASETS = {
    "breast cancer": {"dataset": "sklearn:breast_cancer"},
    "digits": {"dataset": "sklearn:digits", "owners": 4, "processors": 3},
    "framingham": {"dataset": f"csv:{FRAMINGHAM}", "label_column": "TenYearCHD"},
}
TEST_FRACTION = 0.25
console = Console()


# ---- tasks and data ----------------------------------------------------------------------------
def game_spec(features: tuple[int, ...], epsilon: float | None) -> SpecFile:
    """examples/breast_cancer.toml on a subset of its features, privacy at ``epsilon``."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    for key in ("names", "mean", "std"):
        data["features"][key] = [data["features"][key][i] for i in features]
    data["task"]["max_epochs"] = EPOCHS
    data["privacy"] = {"enabled": epsilon is not None}
    if epsilon is not None:
        data["privacy"]["epsilon"] = epsilon
    return SpecFile.model_validate(data)


def population(features: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    spec = game_spec(features, 8.0)
    raw = load_breast_cancer()
    f = spec.features
    X = scaler(list(f.mean), list(f.std), f.spread).transform(raw.data[:, list(features)])
    return clip_rows(X, spec.privacy.clip_norm), raw.target.astype(np.float64)


def game_task(
    features: tuple[int, ...], epsilon: float | None, crypto: Crypto | None = None
) -> tuple[TaskKeys, float, SpecFile]:
    spec = game_spec(features, epsilon)
    keys = (crypto or Plaintext()).keygen(
        kind=spec.kind,
        n_features=len(features),
        n_outputs=1,
        preset=spec.he.preset,
        expected_samples=FLOOR,
        privacy=crypto_privacy(spec),
    )
    return keys, noise_std(spec, keys.public.layout), spec


def mu_of(epsilon: float) -> float:
    return attack.gdp_mu(game_spec(SMALL, epsilon).privacy.noise_multiplier(EPOCHS), EPOCHS)


# ---- the requester relaying messages ----------------------------------------------------------
SEAL_MODES = ("key-swap", "key-own-signature", "rename-holder", "to-colluder", "rename-to-colluder")


class Relay(LocalTransport):
    """The requester's transport: rewrites what it relays to owners before they seal, and
    tries to open (or counts) what they seal.

    ``key-swap``: each processor's channel key replaced by the requester's, under the
    processor's signature; ``key-own-signature``: the same, signed by the requester's own
    account; ``rename-holder``: each holder's address replaced by the requester's own account
    (the holder's Merkle proof kept) with a key that account signed; ``to-colluder``: every
    block's holder replaced by one processor's index and address (the proof then fails);
    ``rename-to-colluder``: every holder's address replaced by one processor's, proof kept.
    In a private task: ``strip-noise`` relays the model without the owners' noise releases;
    ``zero-noise`` replaces each with noise of its own making (zero, sealed to the processor,
    signed by the requester's account)."""

    def __init__(self, nodes: list[PartyNode], mode: str) -> None:
        super().__init__(nodes)
        self.mode = mode
        self.mine = ChannelKeys.generate()
        self.thief = Account.create()
        self.colluder: str | None = None
        self.colluder_share = 0  # blocks the committed assignment gives the colluder
        self.routed = 0  # (block, holder) pairs the committed assignment routes
        self.sealed = 0  # blocks owners sealed
        self.opened = 0  # ... that the requester opened with its key
        self.to_colluder = 0  # ... that went to the colluder
        self.refusals: list[str] = []
        self.channel: dict[str, bytes] = {}  # processor -> its channel key, as relayed
        self.replaced = 0  # noise releases stripped or replaced

    def ask(
        self, action: str, requests: Mapping[str, Envelope], *, timeout: float | None = None
    ) -> dict[str, Envelope]:
        if action == "seal" and self.mode in SEAL_MODES:
            requests = {a: self._rewrite(e) for a, e in requests.items()}
        if action == "model" and self.mode in ("strip-noise", "zero-noise"):
            requests = {a: self._noise(a, e) for a, e in requests.items()}
        replies = super().ask(action, requests, timeout=timeout)
        if action == "channel_key":
            for address, reply in replies.items():
                for frame in reply.frames:
                    with contextlib.suppress(UntrustedInputError):
                        key = decode(frame, ChannelKey, party="bench")
                        self.channel[address.lower()] = key.public_key
        if action == "seal":
            for reply in replies.values():
                targets = [t.lower() for t in reply.text("processors").split(",") if t]
                for target, frame in zip(targets, reply.frames, strict=False):
                    block = decode(frame, SealedBlock, party="bench")
                    self.sealed += 1
                    self.to_colluder += int(target == (self.colluder or "").lower())
                    with contextlib.suppress(UntrustedInputError):
                        open_sealed(block.sealed, self.mine, party="owner", max_bytes=1 << 30)
                        self.opened += 1
            self.refusals += [p for p in self.problems if "seal" in p]
        return replies

    def _noise(self, processor: str, envelope: Envelope) -> Envelope:
        model, *releases = envelope.frames
        if self.mode == "strip-noise":
            self.replaced += len(releases)
            return Envelope(envelope.fields, (model,))
        owner = next(n.owner for n in self.nodes.values() if n.owner is not None)
        assert owner.keys is not None
        frames = [model]
        for frame in releases:
            release = decode(frame, NoiseRelease, party="bench")
            ref = release.ref
            zero = owner.keys.encrypt_noise(
                block_id=f"{ref.owner.lower()}/{ref.index}",
                epoch=release.epoch,
                std=0.0,
                rng=random.Random(0),
            )
            signature = sign_noise(
                self.thief,
                self._domain(),
                release.task_id,
                release.epoch,
                ref.index,
                hashlib.sha256(zero).digest(),
            )
            forged = release.model_copy(
                update={
                    "sealed": seal(zero, self.channel[processor.lower()]),
                    "signature": signature,
                }
            )
            frames.append(encode(forged))
            self.replaced += 1
        return Envelope(envelope.fields, tuple(frames))

    def _domain(self) -> bytes:
        owner = next(n.owner for n in self.nodes.values() if n.owner is not None)
        return owner.market.domain_separator()

    def _rewrite(self, envelope: Envelope) -> Envelope:
        frames = list(envelope.frames)
        share = decode(frames[0], RoutingShare, party="bench")
        keys = [decode(f, ChannelKey, party="bench") for f in frames[1:]]
        if not envelope.fields.get("first"):  # the first range an owner is asked for
            self.routed += sum(len(b.holders) for b in share.blocks)
        if self.mode in ("key-swap", "key-own-signature"):
            for i, key in enumerate(keys, start=1):
                signature = key.signature
                if self.mode == "key-own-signature":
                    signature = sign_channel_key(
                        self.thief, self._domain(), key.task_id, self.mine.public
                    )
                frames[i] = encode(
                    key.model_copy(update={"public_key": self.mine.public, "signature": signature})
                )
            return Envelope(envelope.fields, tuple(frames))
        holders = [h for b in share.blocks for h in b.holders]
        if self.mode == "rename-holder":
            address = self.thief.address
            signature = sign_channel_key(
                self.thief, self._domain(), share.task_id, self.mine.public
            )
            frames.append(
                encode(
                    ChannelKey(
                        task_id=share.task_id,
                        processor=address,
                        public_key=self.mine.public,
                        signature=signature,
                    )
                )
            )
            update: dict[str, Any] = {"processor": address}
        else:
            colluder = min(keys, key=lambda k: k.processor.lower()).processor
            self.colluder = colluder
            self.colluder_share += sum(h.processor.lower() == colluder.lower() for h in holders)
            index = next(
                (h.processor_index for h in holders if h.processor.lower() == colluder.lower()),
                None,
            )
            update = {"processor": colluder}
            if self.mode == "to-colluder":
                update["processor_index"] = index if index is not None else 10**6
        blocks = [
            b.model_copy(update={"holders": [h.model_copy(update=update) for h in b.holders]})
            for b in share.blocks
        ]
        frames[0] = encode(share.model_copy(update={"blocks": blocks}))
        return Envelope(envelope.fields, tuple(frames))


def relay_attack(mode: str, *, private: bool = False) -> dict[str, Any]:
    """One breast-cancer task (the example, 2 epochs; ``private``: with DP at the default
    epsilon) with the requester relaying as ``mode``."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 2
    data["privacy"] = {"enabled": private}
    spec = SpecFile.model_validate(data)
    made: list[Relay] = []

    def transport(nodes: list[PartyNode]) -> Relay:
        made.append(Relay(nodes, mode))
        return made[-1]

    notes: list[str] = []
    used = 0
    start = time.perf_counter()
    try:
        result = run_task(
            spec,
            base=EXAMPLES,
            workers=0,
            crypto=Plaintext(),
            chain_url="memory",
            transport=transport,
        )
        notes = result.report.notes
        used = sum(o.blocks_used for o in result.outcomes)
    except FedmarketError as exc:
        notes = [f"run ended: {exc}"]
    (relay,) = made
    return {
        "mode": mode,
        "routed": relay.routed,
        "sealed": relay.sealed,
        "opened_by_requester": relay.opened,
        "to_colluder": relay.to_colluder,
        "colluder_assigned": relay.colluder_share,
        "noise_replaced": relay.replaced,
        "block_results_used": used,
        "refusals": [n for n in notes if "sign" in n or "prove" in n or "seal" in n][:4],
        "seconds": time.perf_counter() - start,
    }


# ---- (1) the attacks ----------------------------------------------------------------------------
def structural(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    X, y = population(SMALL)

    # key substitution, and the holder renamed (the key then checks out under the new name)
    for mode, what in (
        ("key-swap", "key substitution, processor's signature kept"),
        ("key-own-signature", "key substitution, requester's own signature"),
        ("rename-holder", "key substitution by renaming the routed holder"),
    ):
        r = relay_attack(mode)
        opened = f"{r['opened_by_requester']} of {r['routed']} blocks opened"
        console.print(f"  {what}: {opened}")
        rows.append(
            {
                "attack": what,
                "measure": "blocks the requester opens (record error)",
                "without": f"all {r['routed']} (error 0: it decrypts every row)",
                "with": opened,
                "refused": r["opened_by_requester"] == 0,
                "detail": r,
            }
        )

    # tiny totals: a one-sample total from the crypto layer without the floor (keys asking
    # Privacy(), what every task's keys asked before issue 14), then each way a requester
    # tries to get one under the defences
    spec_off = game_spec(SMALL, None)
    bare = Plaintext().keygen(
        kind=spec_off.kind,
        n_features=len(SMALL),
        n_outputs=1,
        preset=spec_off.he.preset,
        expected_samples=FLOOR,
        privacy=Privacy(),
    )
    one = bare.public.encrypt_block(X[:1], y[:1], block_id="one")
    g = attack.release(
        bare,
        one,
        np.zeros((1, len(SMALL) + 1)),
        epoch=0,
        block_id="one",
        n_samples=1,
        std=0.0,
        rng=random.Random(0),
    ).reshape(-1)
    exposed = float(np.linalg.norm(g[:-1] / g[-1] - X[0]))
    private, _, spec = game_task(SMALL, 8.0)
    refusals = {}
    try:
        private.public.encrypt_block(X[:2], y[:2], block_id="small-owner")
        refusals["an owner with 2 points"] = "encrypted"
    except ConfigError as exc:
        refusals["an owner with 2 points"] = f"refused: {exc}"
    try:
        check_layout(spec, bare.public.layout)
        refusals["keys published without the floor"] = "accepted"
    except UntrustedInputError as exc:
        refusals["keys published without the floor"] = f"refused: {exc}"
    try:
        block_bounds(1, private.public.layout.block_size, 0, spec.privacy.min_block_points)
        refusals["a fill forced down to 1"] = "cut"
    except UntrustedInputError as exc:
        refusals["a fill forced down to 1"] = f"refused: {exc}"
    sizes = tiny_blocks_by_spec()
    refusals["he.block_points = 1"] = f"smallest block {min(sizes)} samples ({len(sizes)} blocks)"
    console.print(f"  tiny totals: exposed error {exposed:.2g}; {refusals}")
    rows.append(
        {
            "attack": "tiny totals (spec, keys, small owner, forced fill)",
            "measure": "error of a record from a one-sample total",
            "without": exposed,
            "with": "; ".join(f"{k}: {v.split(':')[0]}" for k, v in refusals.items()),
            "refused": min(sizes) >= FLOOR
            and all(
                v.startswith("refused") for k, v in refusals.items() if "block_points" not in k
            ),
            "detail": refusals,
        }
    )

    rows.append(crafted_model())

    for mode, what in (
        ("to-colluder", "routing every block to one processor (its proof)"),
        ("rename-to-colluder", "routing every block to one processor (another's proof)"),
    ):
        r = relay_attack(mode)
        extra = r["to_colluder"] - r["colluder_assigned"]
        console.print(
            f"  {what}: {r['to_colluder']} blocks to the colluder, "
            f"{r['colluder_assigned']} assigned"
        )
        rows.append(
            {
                "attack": what,
                "measure": "blocks a colluding processor reads beyond its assignment",
                "without": f"all {r['routed']} (error 0)",
                "with": f"{max(extra, 0)} beyond its {r['colluder_assigned']} assigned",
                "refused": extra <= 0,
                "detail": r,
            }
        )

    honest = relay_attack("none", private=True)
    for mode, what in (
        ("strip-noise", "noise stripped by the relaying requester"),
        ("zero-noise", "noise replaced by the requester's own (zero)"),
    ):
        r = relay_attack(mode, private=True)
        console.print(
            f"  {what}: {r['block_results_used']} block results used "
            f"({honest['block_results_used']} honest), {r['noise_replaced']} releases touched"
        )
        rows.append(
            {
                "attack": what,
                "measure": "noiseless block totals the requester decrypts",
                "without": f"all {honest['block_results_used']} (the moment attack's exact row)",
                "with": f"{r['block_results_used']} block results computed",
                "refused": r["block_results_used"] == 0 and r["noise_replaced"] > 0,
                "detail": {"attack": r, "honest": honest},
            }
        )
    return rows


def tiny_blocks_by_spec() -> list[int]:
    """The example with ``he.block_points = 1``: the sizes of the blocks owners cut."""
    data = load_spec(EXAMPLES / "breast_cancer.toml").model_dump()
    data["task"]["max_epochs"] = 1
    data["he"]["block_points"] = 1
    capture: list[tuple[str, str, str, bytes]] = []
    run_task(
        SpecFile.model_validate(data),
        base=EXAMPLES,
        workers=0,
        crypto=Plaintext(),
        chain_url="memory",
        capture=capture,
    )
    sizes: list[int] = []
    for frame in dict.fromkeys(f for _, _, _, f in capture):  # each manifest once
        with contextlib.suppress(UntrustedInputError):
            sizes += decode(frame, DataManifest, party="bench").block_sizes
    return sizes


def crafted_model() -> dict[str, Any]:
    """Real CKKS, all 30 features: the requester's own compact ciphertext with certified
    weights w* in one period of slots and zeros elsewhere (the slots of a few samples), noise
    std 0 to isolate the processor's projection. After it the totals are those of the
    well-formed averaged model; the isolation estimate ``(g(crafted) - g(0))[:d] / [d]`` is
    compared with every sample."""
    import tenseal.sealapi as sa

    from fedmarket.he import wire
    from fedmarket.he._seal import TOP, dump
    from fedmarket.he.crypto import CKKS, CKKSKeys
    from fedmarket.he.model import compact_scale

    keys, _, _ = game_task(ALL, 8.0, CKKS())
    assert isinstance(keys, CKKSKeys)
    public = keys.keypair.public
    spec = keys.keypair.spec
    X, y = population(ALL)
    rows = np.random.default_rng(3).choice(len(X), FLOOR, replace=False)
    block = keys.public.encrypt_block(X[rows], y[rows], block_id="victim")
    d = len(ALL)
    w_star = keys.public.layout.kind.certify(
        np.random.default_rng(4).normal(0, 5, (1, d + 1)), d, 1.0
    )
    values = np.zeros(spec.length)
    values[: d + 1] = spec.poly.kappa * w_star[0]  # one period of slots; zeros elsewhere
    ct = sa.Ciphertext()
    runtime = public.runtime
    sa.Encryptor(runtime.context, public.public_key).encrypt(
        runtime.encode(values, TOP, compact_scale(public)), ct
    )
    crafted = wire.pack(wire.Kind.MODEL, public.digest, {"epoch": 1}, [dump(ct)])

    def totals(model: bytes, epoch: int) -> np.ndarray:
        noise = keys.public.encrypt_noise(
            block_id="victim", epoch=epoch, std=0.0, rng=random.Random(0)
        )
        result = keys.public.run_program(
            model, block, noise=noise, model_party="requester", block_party="owner"
        )
        return keys.decrypt_result(result, party="p", epoch=epoch, block_id="victim").sums

    got = totals(crafted, 1).reshape(-1)
    zero = totals(keys.encrypt_model(np.zeros((1, d + 1)), epoch=0, seed=bytes(32)), 0).reshape(-1)
    averaged = w_star / spec.model_copies
    expected = keys.public.layout.kind.gradient_sums(averaged, X[rows], y[rows][:, None])
    delta = got - zero
    x_hat = delta[:d] / delta[d] if abs(delta[d]) > 1e-12 else np.full(d, np.inf)
    gaps = np.linalg.norm(X[rows] - x_hat, axis=1)
    nearest = float(np.min(gaps))
    # for scale: how far the block's own records lie from their nearest other record
    spacing = float(
        np.median([np.partition(np.linalg.norm(X[rows] - x, axis=1), 1)[1] for x in X[rows]])
    )
    try:
        check_revealed_model(
            keys.public, hashlib.sha256(crafted).digest(), w_star, epoch=1, seed=bytes(32)
        )
        owners = "accepted"
    except UntrustedInputError:
        owners = "refused"
    deviation = float(np.max(np.abs(got - expected.reshape(-1))))
    console.print(
        f"  crafted model: totals = the averaged model's within {deviation:.2g}; isolation error "
        f"{nearest:.3g} (nearest sample; records lie {spacing:.3g} apart); owners' check: {owners}"
    )
    return {
        "attack": "per-slot crafted model (CKKS)",
        "measure": "isolation estimate's error to the nearest sample",
        "without": "0 (v4: no projection; the bias lane gives the scale)",
        "with": f"{nearest:.3g} (records lie {spacing:.2g} apart); owners' check: {owners}",
        "refused": owners == "refused",
        "detail": {
            "totals_vs_averaged_model_max_abs": deviation,
            "nearest_sample_error": nearest,
            "median_record_spacing": spacing,
            "model_copies": spec.model_copies,
            "owners_check": owners,
        },
    }


def statistical(quick: bool) -> list[dict[str, Any]]:
    rows = []
    repeats = 5 if quick else 20
    trials = 30 if quick else 200
    control_trials = 10 if quick else 30
    settings: list[float | None] = [None, *EPSILONS]

    # moments: least squares over T random certified models, one block of 64 (5 lanes)
    X, y = population(SMALL)
    block_rows = np.random.default_rng(1).choice(len(X), FLOOR, replace=False)
    truth = attack.Moments.of(X[block_rows], y[block_rows])
    solver = attack.MomentAttack(len(SMALL) + 1)
    moment: dict[str, Any] = {}
    for eps in settings:
        keys, std, _ = game_task(SMALL, eps)
        models = attack.certified_models(keys.public, EPOCHS, np.random.default_rng(2))
        block = keys.public.encrypt_block(X[block_rows], y[block_rows], block_id="victim")
        owner = random.Random(3)
        mean_errors, all_errors = [], []
        for _ in range(1 if eps is None else repeats):
            totals = [
                attack.release(
                    keys,
                    block,
                    W,
                    epoch=e,
                    block_id="victim",
                    n_samples=FLOOR,
                    std=std,
                    rng=owner,
                )
                for e, W in enumerate(models)
            ]
            got = solver.solve(models, totals)
            mean_errors.append(
                float(np.sqrt(np.mean((got.feature_sums() - truth.feature_sums()) ** 2)) / FLOOR)
            )
            all_errors.append(float(np.max(np.abs(got.vector() - truth.vector()))))
        moment[label(eps)] = {
            "std": std,
            "mean_rmse": statistics.median(mean_errors),
            "moments_max_error": statistics.median(all_errors),
        }
    console.print(f"  moments: {moment}")
    rows.append(
        {
            "attack": f"moments, {EPOCHS} well-formed models (least squares)",
            "measure": "RMS error of the block's feature means (feature range [-1, 1])",
            "without": moment["off"]["mean_rmse"],
            "with": {label(e): moment[label(e)]["mean_rmse"] for e in EPSILONS},
            "bound": None,
            "detail": moment,
        }
    )

    # informed reconstruction (4 features): success within ETA, and the least-squares error
    within = attack.ball_mass(X, ETA)
    prior = attack.kappa(within)
    recon: dict[str, Any] = {}
    for eps in settings:
        keys, std, _ = game_task(SMALL, eps)
        result = attack.reconstruction_game(
            keys,
            std,
            X,
            y,
            epochs=EPOCHS,
            trials=control_trials if eps is None else trials,
            block_size=FLOOR,
            eta=ETA,
            seed=5,
        )
        recon[label(eps)] = {
            "bayes": result.bayes,
            "snapped": result.snapped,
            "ls_error_median": result.ls_error_median,
            "trials": result.trials,
            "bound": None if eps is None else attack.rero_bound(prior, mu_of(eps)),
        }
    console.print(f"  informed reconstruction (kappa {prior:.3f}): {recon}")
    rows.append(
        {
            "attack": f"informed reconstruction, 63 of 64 known ({EPOCHS} models)",
            "measure": f"success within {ETA} (Bayes guess; prior alone {prior:.3f})",
            "without": recon["off"]["bayes"],
            "with": {label(e): recon[label(e)]["bayes"] for e in EPSILONS},
            "bound": {label(e): recon[label(e)]["bound"] for e in EPSILONS},
            "detail": {"kappa": prior, "eta": ETA, **recon},
        }
    )
    rows.append(
        {
            "attack": "informed reconstruction, least squares",
            "measure": "median L2 error of the fitted record (features in the unit ball)",
            "without": recon["off"]["ls_error_median"],
            "with": {label(e): recon[label(e)]["ls_error_median"] for e in EPSILONS},
            "bound": None,
            "detail": {},
        }
    )

    # informed membership (10 features, K candidates, adaptive models)
    Xm, ym = population(TEN)
    member: dict[str, Any] = {}
    for eps in settings:
        keys, std, _ = game_task(TEN, eps)
        result = attack.reconstruction_game(
            keys,
            std,
            Xm,
            ym,
            epochs=EPOCHS,
            trials=control_trials if eps is None else trials,
            block_size=FLOOR,
            candidates=K,
            seed=8,
        )
        member[label(eps)] = {
            "success": result.membership,
            "trials": result.trials,
            "bound": None if eps is None else attack.rero_bound(1.0 / K, mu_of(eps)),
        }
    console.print(f"  informed membership: {member}")

    # the same game with every model 5x out of the certified region (what owners refuse)
    keys, std, _ = game_task(TEN, 8.0)
    huge = attack.reconstruction_game(
        keys,
        std,
        Xm,
        ym,
        epochs=EPOCHS,
        trials=trials,
        block_size=FLOOR,
        candidates=K,
        seed=8,
        weight_scale=HUGE,
    )
    W = HUGE * attack.certified_models(keys.public, 1, np.random.default_rng(9), radii=[8.0])[0]
    digest = hashlib.sha256(keys.encrypt_model(W, epoch=0, seed=bytes(32))).digest()
    try:
        check_revealed_model(keys.public, digest, W, epoch=0, seed=bytes(32))
        verdict = "accepted"
    except UntrustedInputError as exc:
        verdict = f"refused: {exc}"
    console.print(f"  huge weights: membership {huge.membership:.3f} at eps 8; owners {verdict}")
    rows.append(
        {
            "attack": f"informed membership, 1 of {K} candidates (adaptive models)",
            "measure": f"success (prior alone {1 / K:.3f})",
            "without": member["off"]["success"],
            "with": {label(e): member[label(e)]["success"] for e in EPSILONS},
            "bound": {label(e): member[label(e)]["bound"] for e in EPSILONS},
            "detail": member,
        }
    )
    rows.append(
        {
            "attack": f"the same with weights {HUGE:g}x the certified reach",
            "measure": "success at eps 8 if owners released noise for them",
            "without": huge.membership,
            "with": f"no release: owners' check {verdict.split(':')[0]}",
            "bound": {"eps 8": member["eps 8"]["bound"]},
            "refused": verdict.startswith("refused"),
            "detail": {"success": huge.membership, "trials": huge.trials, "owners": verdict},
        }
    )
    return rows


def label(eps: float | None) -> str:
    return "off" if eps is None else f"eps {eps:g}"


# ---- (2) accuracy against epsilon ---------------------------------------------------------------
def accuracy_run(name: str, seed: int, epsilon: float | None) -> dict[str, Any]:
    kw = dict(DATASETS[name])
    dataset = str(kw.pop("dataset"))
    spec = starter_spec(dataset, base=EXAMPLES, test_fraction=TEST_FRACTION, seed=seed, **kw)
    data = spec.model_dump(exclude_none=True)
    data["privacy"] = {"enabled": epsilon is not None}
    if epsilon is not None:
        data["privacy"]["epsilon"] = epsilon
    spec = SpecFile.model_validate(data)
    start = time.perf_counter()
    result = run_task(spec, base=EXAMPLES, workers=0, crypto=Plaintext(), chain_url="memory")
    report = result.report
    out: dict[str, Any] = {
        "dataset": name,
        "seed": seed,
        "epsilon": epsilon,
        "test_accuracy": report.test_metric,
        "epochs": len(report.epochs),
        "seconds": time.perf_counter() - start,
        "stop_reason": report.stop_reason,
    }
    test = result.test
    if name == "framingham" and test is not None:
        # the held-out rows as the requester's model takes them (run_task's own test metric)
        f = spec.features
        X_test = scale(task_features(spec, test.X, base=EXAMPLES), f.mean, f.std, f.spread)
        if spec.privacy.enabled:  # a private task's model was trained on clipped rows
            X_test = clip_rows(X_test, spec.privacy.clip_norm)
        scores = result.model.predict_proba(X_test)[:, 1]  # type: ignore[attr-defined]
        out["test_auc"] = float(roc_auc_score(test.y, scores))
    privacy = report.to_json().get("privacy")  # a private task: the promise, eps spent
    if privacy:
        out["privacy"] = privacy
    return out


def accuracy(seeds: int, names: list[str], epsilons: tuple[float, ...]) -> list[dict[str, Any]]:
    runs = []
    for name in names:
        for seed in range(seeds):
            for eps in (None, *epsilons):
                run = accuracy_run(name, seed, eps)
                runs.append(run)
                auc = f", AUC {run['test_auc']:.3f}" if "test_auc" in run else ""
                console.print(
                    f"  {name} seed {seed} {label(eps)}: test {run['test_accuracy']:.4f}{auc} "
                    f"({run['epochs']} epochs, {run['seconds']:.1f} s)"
                )
    return runs


def summarise(runs: list[dict[str, Any]], epsilons: tuple[float, ...]) -> list[dict[str, Any]]:
    table = []
    for name in dict.fromkeys(r["dataset"] for r in runs):
        for metric in ("test_accuracy", "test_auc"):
            cells: dict[str, Any] = {"dataset": name, "metric": metric}
            for eps in (None, *epsilons):
                values = [
                    r[metric]
                    for r in runs
                    if r["dataset"] == name and r["epsilon"] == eps and r.get(metric) is not None
                ]
                if not values:
                    break
                cells[label(eps)] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
            else:
                base = cells["off"]["median"]
                for eps in epsilons:
                    cells[label(eps)]["ratio"] = cells[label(eps)]["median"] / base
                    # epsilon the report shows spent per owner (early stopping spends less)
                    spent = [
                        float(v)
                        for r in runs
                        if r["dataset"] == name and r["epsilon"] == eps and r.get("privacy")
                        for v in r["privacy"]["spent"].values()
                    ]
                    if spent:
                        cells[label(eps)]["spent_median"] = statistics.median(spent)
                table.append(cells)
    return table


# ---- output ------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.3f}"
    if isinstance(value, dict):
        return " / ".join(fmt(v) for v in value.values())
    return str(value)


def print_tables(out: dict[str, Any]) -> None:
    attacks = Table(title="attacks: without defences -> with (eps 8 / 3 / 1 where noise applies)")
    for column in ("attack", "measure", "without", "with", "mu-GDP bound"):
        attacks.add_column(column)
    for row in out["attacks"]:
        attacks.add_row(
            row["attack"],
            row["measure"],
            fmt(row["without"]),
            fmt(row["with"]),
            fmt(row["bound"]) if row.get("bound") else "-",
        )
    console.print(attacks)
    acc = Table(
        title=f"accuracy against epsilon (median over {out['seeds']} seeds; ratio to off; "
        "epsilon spent per owner, median)"
    )
    for column in ("data set", "metric", "off", *(label(e) for e in out["epsilons"])):
        acc.add_column(column)
    for cells in out["accuracy"]:
        acc.add_row(
            cells["dataset"],
            cells["metric"],
            f"{cells['off']['median']:.4f}",
            *(
                f"{cells[label(e)]['median']:.4f} ({cells[label(e)]['ratio']:.3f}x; spent "
                f"{cells[label(e)].get('spent_median', float('nan')):.2f})"
                for e in out["epsilons"]
            ),
        )
    console.print(acc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and seeds")
    parser.add_argument("--seeds", type=int, help="seeds per accuracy cell (default 10; quick 1)")
    parser.add_argument(
        "--only", choices=("attacks", "accuracy"), help="run one part (the other is not written)"
    )
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 10)
    start = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "command": "make bench-privacy" + (" ARGS=--quick" if args.quick else ""),
        "epochs": EPOCHS,
        "epsilons": list(EPSILONS),
        "seeds": seeds,
        "attacks": [],
        "accuracy": [],
    }
    steps: list[tuple[str, Callable[[], None]]] = []
    if args.only in (None, "attacks"):

        def run_attacks() -> None:
            console.print("[bold]structural attacks[/bold]")
            out["attacks"] += structural(args.quick)
            console.print("[bold]statistical attacks[/bold]")
            out["attacks"] += statistical(args.quick)

        steps.append(("attacks", run_attacks))
    if args.only in (None, "accuracy"):

        def run_accuracy() -> None:
            console.print("[bold]accuracy against epsilon[/bold]")
            runs = accuracy(seeds, list(DATASETS), EPSILONS)
            out["accuracy_runs"] = runs
            out["accuracy"] = summarise(runs, EPSILONS)

        steps.append(("accuracy", run_accuracy))
    for _, step in steps:
        step()
    out["seconds"] = time.perf_counter() - start
    out["machine"]["load_average_at_end"] = os.getloadavg()
    print_tables(out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    console.print(f"wrote {RESULTS.relative_to(ROOT)} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
