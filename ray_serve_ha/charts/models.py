"""The models the RayService can serve, in one table, and what a model id looks like.

A model's facts are its own, not its accelerator's: the size of its weights (a worker loads
them into host memory, then onto its devices, and keeps them on the node's disk), how many
of an accelerator's Ray units (NeuronCores, GPUs) one replica shards it over (the tensor
parallel degree), and the context the engine is set up for. The settings check `modelId`
against this table; a model it lacks is served when the user gives the size of its weights
(`modelWeightsGb`), and its parallelism then follows from the accelerator's memory
(`Accelerator.replica_units`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# A Hugging Face model id, <organization>/<model> (what the Hub accepts in a repository id).
HF_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
HF_MODEL_ID_RULE = "must be a Hugging Face model id, <organization>/<model>"
# Prompt plus completion, tokens, unless the table says otherwise: 4,096 keeps a 7-8 B
# model's KV cache for a batch of 4 within one Inferentia2 chip beside its weights.
DEFAULT_MAX_MODEL_LEN = 4096


@dataclass(frozen=True)
class Model:
    id: str
    # Its weights in bf16, GB (2 bytes per parameter).
    weights_gb: float
    # Ray units one replica shards the model over, per accelerator name; an accelerator not
    # listed derives it from its device memory (Accelerator.replica_units).
    tensor_parallel: Mapping[str, int] = field(default_factory=dict)
    max_model_len: int = DEFAULT_MAX_MODEL_LEN

    def __post_init__(self) -> None:
        if not HF_MODEL_ID.match(self.id):
            raise ValueError(f"model id {self.id!r} {HF_MODEL_ID_RULE}")
        if self.weights_gb <= 0:
            raise ValueError(f"{self.id}: weights_gb={self.weights_gb:g} must be above 0")
        if any(units < 1 for units in self.tensor_parallel.values()):
            raise ValueError(f"{self.id}: tensor_parallel {dict(self.tensor_parallel)} must be at least 1 each")


MISTRAL_7B_INSTRUCT = Model(
    "mistralai/Mistral-7B-Instruct-v0.2",
    # 7.24 B parameters.
    weights_gb=14.5,
    # The two NeuronCores of one Inferentia2 or Trainium chip (16 GiB each); one GPU of 24 GiB
    # or more.
    tensor_parallel={"neuron": 2, "trainium": 2, "nvidia": 1},
)
LLAMA_3_1_8B_INSTRUCT = Model(
    "meta-llama/Llama-3.1-8B-Instruct",
    # 8.03 B parameters. The public Neuron anchor runs it at TP 2 on one inf2 chip.
    weights_gb=16.1,
    tensor_parallel={"neuron": 2, "trainium": 2, "nvidia": 1},
)

MODELS: dict[str, Model] = {m.id: m for m in (MISTRAL_7B_INSTRUCT, LLAMA_3_1_8B_INSTRUCT)}
DEFAULT_MODEL = MISTRAL_7B_INSTRUCT
DEFAULT_MODEL_ID = DEFAULT_MODEL.id
# Both are gated on Hugging Face: the Secrets Manager secret that holds the token the
# workers download them with.
DEFAULT_HUGGING_FACE_TOKEN_SECRET = "ray-serve-ha/hugging-face-token"


def model_of(
    model_id: str, weights_gb: float | None = None, *, id_key: str = "modelId", weights_key: str = "modelWeightsGb"
) -> Model:
    """The table's model, or one the user sized; a ValueError names the fix otherwise, with
    the caller's names for the two inputs (settings keys, or command-line options)."""
    if model_id in MODELS:
        if weights_gb is not None:
            raise ValueError(
                f"{weights_key}={weights_gb:g}: the models table already knows {model_id} "
                f"({MODELS[model_id].weights_gb:g} GB); leave it unset"
            )
        return MODELS[model_id]
    if weights_gb is None:
        raise ValueError(
            f"{id_key}={model_id!r}: is not in the models table ({', '.join(MODELS)}); set {weights_key} to the "
            "size of its weights in GB (bf16: 2 × its parameters in billions) to serve it"
        )
    return Model(model_id, weights_gb=weights_gb)
