"""Where the weights come from: a local folder, or a Hugging Face download."""

from __future__ import annotations

import os

from pydantic import SecretStr

# Only what serving needs: no original .pth/.bin duplicates of the safetensors weights.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


def resolve_model_path(model_id: str, token: SecretStr | None) -> str:
    """A local folder with the model: `model_id` itself when it is a folder, else a
    snapshot download into the Hugging Face cache. Engines then load from the folder, so
    the token is used in this one call and handed to no other library."""
    if os.path.isdir(model_id):
        return model_id
    from huggingface_hub import snapshot_download

    return snapshot_download(
        repo_id=model_id,
        token=token.get_secret_value() if token else None,
        allow_patterns=_DOWNLOAD_PATTERNS,
    )
