"""The baseline for ``bench_serve.py``: a bare FastAPI endpoint scoring the same model on the same requests,
with every entity's features in process memory (no Redis, no registry, no metrics, no auth).

The features of entity ``str(i)`` (``0 <= i < BENCH_ENTITIES``) are :func:`online` ``(i)``: the benchmark
writes the same vectors to Redis for Rivulet. They are kept in three arrays (24 MB for a million entities)
and looked up per request, as a dict of vectors would be."""

from __future__ import annotations

import os
import pickle
from array import array
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from features.engine import FeatureEngine
from streaming.learning.core import predict, select_inputs
from tests.support.feature_defs import ZIP


def online(i: int) -> dict[str, Any]:
    """Entity ``i``'s online vector (the ``zip`` view's features), the same in Redis and here."""
    return {
        "count_lifetime": 1 + i % 97,
        "salary_mean_10m": 20_000.0 + (i * 7_919) % 130_000,
        "loan_max_lifetime": float((i * 104_729) % 500_000),
    }


ENTITIES = int(os.environ.get("BENCH_ENTITIES", "0"))  # 0: imported by bench_serve.py for online()
STATE = pickle.loads(Path(os.environ["BENCH_STATE"]).read_bytes()) if ENTITIES else None
COUNT = array("q", (1 + i % 97 for i in range(ENTITIES)))
SALARY = array("d", (20_000.0 + (i * 7_919) % 130_000 for i in range(ENTITIES)))
LOAN = array("d", (float((i * 104_729) % 500_000) for i in range(ENTITIES)))
ENGINE = FeatureEngine(ZIP)
app = FastAPI()


def features(entity: str) -> dict[str, Any]:
    i = int(entity) if entity.isdigit() else -1
    if not 0 <= i < ENTITIES:
        return {}
    return {"count_lifetime": COUNT[i], "salary_mean_10m": SALARY[i], "loan_max_lifetime": LOAN[i]}


class Body(BaseModel):
    entity: str
    fields: dict[str, float | int | str | bool | None] = {}


@app.post("/v1/models/zipm/predict")
async def score(body: Body) -> dict:
    vector = ENGINE.serve(features(body.entity), body.fields)
    label, proba = predict(STATE, select_inputs(vector, None), serving=True)
    return {"prediction": label, "probabilities": {str(k): v for k, v in (proba or {}).items()}}
