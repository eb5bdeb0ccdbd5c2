"""README's notebook example at full length (DCL on digits in a scikit-learn pipeline), with two
references on the same split: raw pixels into the same classifier, and the encoder after one step
at a negligible learning rate (close to its random initialisation).

    python benchmarks/estimator_digits.py            # the README's five epochs
    python benchmarks/estimator_digits.py --epochs 20 --encoder resnet18
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from dcl_core.estimators import DCL
from dcl_core.export import load_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--encoder", default="convnet_small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default="digits-dcl", help="where the encoder is saved")
    args = parser.parse_args()

    digits = load_digits()
    X = (digits.images * 255 / 16).astype(np.uint8)
    X_train, X_test, y_train, y_test = train_test_split(X, digits.target, random_state=0)
    settings = dict(encoder=args.encoder, batch_size=args.batch_size, epochs=args.epochs)

    started = time.monotonic()
    pipe = make_pipeline(DCL(**settings), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    row = {"linear_top1": pipe.score(X_test, y_test), "knn_top1": pipe[0].score(X_test, y_test),
           "seconds": round(time.monotonic() - started, 1), "steps": pipe[0].train_result_.steps}
    features = pipe[0].transform(X_test)
    pipe[0].save(args.out)
    encoder = load_encoder(args.out)
    with torch.no_grad():
        same = encoder(encoder.transform(torch.from_numpy(X_test).unsqueeze(1).expand(-1, 3, -1, -1))).numpy()
    row["max_abs_diff_vs_load_encoder"] = float(np.abs(features - same).max())

    flat = LogisticRegression(max_iter=1000).fit(X_train.reshape(len(X_train), -1), y_train)
    row["raw_pixels_linear_top1"] = flat.score(X_test.reshape(len(X_test), -1), y_test)
    barely = make_pipeline(DCL(**settings, max_steps=1, lr=1e-9, verbose=False),
                           LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    row["one_step_linear_top1"] = barely.score(X_test, y_test)
    row["one_step_knn_top1"] = barely[0].score(X_test, y_test)
    print(json.dumps({"settings": settings, **row}, indent=2))


if __name__ == "__main__":
    main()
