"""Regenerate the example specs: python examples/generate.py (run from the repo root)."""

from __future__ import annotations

from pathlib import Path

from fedmarket.spec import SpecFile, dump_spec
from fedmarket.starter import DATA_PRICE, PROCESSING_PRICE, network_spec, starter_spec

HERE = Path(__file__).parent
MLP_EPOCHS = 70
COMMENTS = {
    "task": "fedmarket task spec: all but [run] is announced and hashed on chain",
    "budget": "token base units (integers); 18 decimals: 10**18 is one token",
    "features": "scaling constants from the requester's own validation split",
    "run": "local runs only: which simulated parties exist and their bids",
}


def write(name: str, spec: SpecFile, run_comment: str | None = None) -> None:
    comments = {**COMMENTS, **({"run": run_comment} if run_comment else {})}
    (HERE / name).write_text(dump_spec(spec, comments=comments))


def main() -> None:
    # the paper's A to E: one requester, two owners, two processors
    write("breast_cancer.toml", starter_spec("sklearn:breast_cancer", base=HERE))
    write("digits.toml", starter_spec("sklearn:digits", owners=4, processors=3, base=HERE))
    write(
        "framingham.toml",
        starter_spec("csv:../../shared/data/framingham.csv", label_column="TenYearCHD", base=HERE),
    )
    own = starter_spec("sklearn:breast_cancer", name="breast_cancer_own_data", base=HERE)
    d = own.model_dump(exclude_none=True)
    d["run"].update(
        scenario="own-data",
        requester_points=200,
        owners=[{"name": "owner1", "points": 254, "price": DATA_PRICE}],
    )
    d["budget"]["data"] = 254 * DATA_PRICE * 3 // 2
    write(
        "own_data.toml",
        SpecFile.model_validate(d),
        "own-data: the requester sells its own 200 points into its task at price 0, buys the rest",
    )
    own = starter_spec(
        "sklearn:breast_cancer", name="breast_cancer_own_compute", processors=1, base=HERE
    )
    d = own.model_dump(exclude_none=True)
    d["run"].update(scenario="own-compute", processing_price=PROCESSING_PRICE, processors=[])
    d["integrity"]["replication"] = 0.0
    write(
        "own_compute.toml",
        SpecFile.model_validate(d),
        "own-compute: each owner processes its own encrypted points (see the README)",
    )


def digits_pixels() -> list[str]:
    """The pixels of scikit-learn's 8x8 digits that are not 0 in every image (61 of 64; the
    MLP takes these columns of sklearn:digits by name). The other 3 carry nothing, and 61
    inputs + the bias fill 64 HE lanes where 64 would need 128: a network block (the data is
    copied into every hidden lane) is half the bytes and half the work."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [n for j, n in enumerate(digits.feature_names) if digits.data[:, j].any()]


def networks() -> None:
    """The neural-network examples: an MLP on the raw pixels, and a head on the CNN backbone."""
    import hashlib

    from fedmarket.backbone import task_features
    from fedmarket.backbones import onnx_bytes
    from fedmarket.data import scaling_constants
    from fedmarket.parties import DataSource

    # A quarter of the rows held out from every party, so the report gives a test accuracy;
    # the integrity checks and the stopping rule are network_spec's (fedmarket.starter).
    mlp = network_spec(starter_spec("sklearn:digits", name="digits-mlp", owners=4,
                                    processors=3, max_epochs=MLP_EPOCHS, test_fraction=0.25,
                                    base=HERE, features=digits_pixels()))  # fmt: skip
    write(
        "digits_mlp.toml",
        mlp,
        "local runs only: which simulated parties exist and their bids (a 61 -> 32 -> 10 "
        "network, square activation, trained on encrypted pixels: docs/he.md)",
    )
    head = starter_spec("sklearn:digits", name="digits-cnn-head", owners=4, processors=3,
                        base=HERE).model_dump(exclude_none=True)  # fmt: skip
    # the CNN that ships inside fedmarket (fedmarket.backbones; examples/backbone/train_cnn.py)
    cnn = hashlib.sha256(onnx_bytes("digits-cnn")).hexdigest()
    backbone = {"file": "builtin:digits-cnn", "sha256": cnn, "input_shape": [1, 8, 8],
                "input_scale": 1 / 16}  # fmt: skip
    head["features"]["backbone"] = backbone
    spec = SpecFile.model_validate(head)
    # the scaling constants of the embeddings, from the requester's own validation split
    _, val = DataSource("sklearn:digits").load()
    embedded = task_features(spec, val.X, base=HERE)
    mean, std = scaling_constants(
        type(val)(embedded, val.y, [f"e{i}" for i in range(embedded.shape[1])])
    )
    head["features"].update(
        names=[f"cnn_{i}" for i in range(embedded.shape[1])], mean=mean, std=std
    )
    write(
        "digits_cnn_head.toml",
        SpecFile.model_validate(head),
        "local runs only (owners embed their raw 8x8 images, pixel / 16, with the published "
        "CNN, builtin:digits-cnn, and encrypt the embeddings; processors train the head)",
    )


if __name__ == "__main__":
    main()
    networks()
