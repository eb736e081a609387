"""The model the RayService serves unless told otherwise, and what a model id looks like."""

from __future__ import annotations

import re

MISTRAL_7B_INSTRUCT = "mistralai/Mistral-7B-Instruct-v0.2"
DEFAULT_MODEL_ID = MISTRAL_7B_INSTRUCT
# A Hugging Face model id, <organization>/<model> (what the Hub accepts in a repository id).
HF_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
HF_MODEL_ID_RULE = "must be a Hugging Face model id, <organization>/<model>"
# Mistral-7B-Instruct is gated on Hugging Face: the Secrets Manager secret that holds the
# token the workers download it with.
DEFAULT_HUGGING_FACE_TOKEN_SECRET = "ray-serve-ha/hugging-face-token"
