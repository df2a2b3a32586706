"""The baseline for ``bench_serve.py``: a bare FastAPI endpoint scoring the same model on the same request,
with the entity's features in process memory (no Redis, no registry, no metrics, no auth)."""

from __future__ import annotations

import os
import pickle

from fastapi import FastAPI
from pydantic import BaseModel

from features.engine import FeatureEngine
from streaming.learning.core import predict, select_inputs
from tests.support.feature_defs import ZIP

with open(os.environ["BENCH_STATE"], "rb") as f:
    STATE, FEATURES = pickle.load(f)
ENGINE = FeatureEngine(ZIP)
app = FastAPI()


class Body(BaseModel):
    entity: str
    fields: dict[str, float | int | str | bool | None] = {}


@app.post("/v1/models/zipm/predict")
async def score(body: Body) -> dict:
    vector = ENGINE.serve(FEATURES.get(body.entity, {}), body.fields)
    label, proba = predict(STATE, select_inputs(vector, None), serving=True)
    return {"prediction": label, "probabilities": {str(k): v for k, v in (proba or {}).items()}}
