"""The Ray Serve LLM application (images/ray-serve) without a server: its typed args, the
Hugging Face token that never shows, and request validation.

The API itself is tested in-process in tests/test_serve_api.py and
tests/test_serve_bad_requests.py, the engines in tests/test_serve_engines.py.
"""

from __future__ import annotations

import pytest

from tests.serve_backend import USER

# isort: split
from ray_serve_llm.args import AppArgs, ArgsError
from ray_serve_llm.engines import load_engine
from ray_serve_llm.hf_token import ModelLoadError, read_token
from ray_serve_llm.protocol import UNSUPPORTED_PARAMETERS, OpenAIError, parse_chat_request

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


# --- Args: typed, validated, with clear errors -------------------------------------------


def test_args_defaults():
    args = AppArgs.parse({"model_id": "mistralai/Mistral-7B-Instruct-v0.2", "engine": "neuron"})
    assert args.model_name == "mistralai/Mistral-7B-Instruct-v0.2"
    assert (args.tensor_parallel_degree, args.max_model_len, args.max_tokens_limit) == (1, 4096, 1024)
    assert args.hf_token_env == "HF_TOKEN"
    assert args.neuron_compiled_artifacts is None


def test_args_accept_the_neuron_production_shape():
    args = AppArgs.parse(
        {
            "model_id": "mistralai/Mistral-7B-Instruct-v0.2",
            "served_model_name": "mistral-7b-instruct",
            "engine": "neuron",
            "tensor_parallel_degree": 2,
            "max_model_len": 4096,
            "max_tokens_limit": 1024,
            "neuron_compiled_artifacts": "s3://my-bucket/neuron-artifacts/",
            "hf_token_env": "HUGGING_FACE_HUB_TOKEN",
        }
    )
    assert args.model_name == "mistral-7b-instruct"
    assert args.neuron_compiled_artifacts == "s3://my-bucket/neuron-artifacts"


@pytest.mark.parametrize(
    "args,message",
    [
        ({"engine": "neuron"}, "  - model_id: required"),
        ({"model_id": "m", "engine": "tpu"}, "  - engine='tpu': must be one of neuron, vllm, transformers"),
        (
            {"model_id": "m", "engine": "vllm", "tensor_parallel_degree": 0},
            "  - tensor_parallel_degree=0: Input should be greater than or equal to 1",
        ),
        (
            {"model_id": "m", "engine": "vllm", "max_tokens_limit": 4096},
            "  - max_tokens_limit=4096 must be below max_model_len=4096 (the prompt needs room too)",
        ),
        (
            {"model_id": "m", "engine": "transformers", "tensor_parallel_degree": 2},
            "  - tensor_parallel_degree=2: the transformers engine runs on one CPU process; only 1 is allowed",
        ),
        (
            {"model_id": "m", "engine": "vllm", "neuron_compiled_artifacts": "/cache"},
            "  - neuron_compiled_artifacts is only used by engine 'neuron' (engine is 'vllm'); remove it",
        ),
        (
            {"model_id": "m", "engine": "neuron", "neuron_compiled_artifacts": "cache"},
            "  - neuron_compiled_artifacts='cache': must be s3://BUCKET/PREFIX or an absolute path",
        ),
        (
            {"model_id": "m", "engine": "neuron", "max_tokens": 10},
            "  - unknown argument 'max_tokens': did you mean 'max_tokens_limit'?",
        ),
        ({"model_id": "m", "engine": "neuron", "replicas": 2}, "  - unknown argument 'replicas'"),
    ],
    ids=["no model", "engine", "tp", "max tokens", "cpu tp", "artifacts on gpu", "relative", "renamed", "unknown"],
)
def test_bad_args_are_refused_with_the_key_and_value(args, message):
    with pytest.raises(ArgsError) as raised:
        AppArgs.parse(args)
    assert message in str(raised.value).splitlines()


def test_build_app_validates_on_the_driver():
    from ray_serve_llm.app import build_app

    with pytest.raises(ArgsError, match="engine='tpu'"):
        build_app({"model_id": "m", "engine": "tpu"})


# --- The HF token never shows ----------------------------------------------------------


SECRET = "hf_" + "Abc123" * 6


def test_a_token_given_as_the_env_name_is_not_echoed():
    with pytest.raises(ArgsError) as raised:
        AppArgs.parse({"model_id": "m", "engine": "vllm", "hf_token_env": SECRET})
    assert SECRET not in str(raised.value)
    assert "looks like a token" in str(raised.value)


def test_token_is_masked_and_kept_out_of_load_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_HF_TOKEN", SECRET)
    token = read_token("TEST_HF_TOKEN")
    assert SECRET not in repr(token) and SECRET not in str(token)
    args = AppArgs.parse(
        {"model_id": f"{tmp_path}/{SECRET}-missing", "engine": "transformers", "hf_token_env": "TEST_HF_TOKEN"}
    )
    with pytest.raises(ModelLoadError) as raised:
        load_engine(args)
    assert SECRET not in str(raised.value)
    assert "***" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_the_token_goes_to_the_hub_download_only(monkeypatch):
    import huggingface_hub

    from ray_serve_llm.model_source import resolve_model_path

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: calls.append(kw) or "/cache/m")
    assert resolve_model_path("mistralai/Mistral-7B-Instruct-v0.2", read_token("T", {"T": SECRET})) == "/cache/m"
    assert calls[0]["repo_id"] == "mistralai/Mistral-7B-Instruct-v0.2" and calls[0]["token"] == SECRET


def test_blank_token_means_no_token():
    assert read_token("HF_TOKEN", {"HF_TOKEN": "  "}) is None
    assert read_token("HF_TOKEN", {}) is None


# --- Request validation (no server) ------------------------------------------------------


def test_developer_role_and_text_parts_become_template_messages():
    request = parse_chat_request(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ]
        },
        max_tokens_limit=10,
    )
    assert [m.as_template_message() for m in request.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]


NEUTRAL_VALUES = {
    "stop": [None, "", []],
    "tools": [None, []],
    "tool_choice": [None, "none"],
    "parallel_tool_calls": [None],
    "functions": [None, []],
    "function_call": [None, "none"],
    "logprobs": [None, False],
    "top_logprobs": [None],
    "logit_bias": [None, {}],
    "presence_penalty": [None, 0, 0.0],
    "frequency_penalty": [None, 0, 0.0],
    "response_format": [None, {"type": "text"}],
}
# What asks for something, and what only looks neutral in a language that coerces types.
ASKING_VALUES = {
    "stop": [["\n"], "END", {}],
    "tools": [[{"type": "function"}], {}],
    "tool_choice": ["auto", "required", ""],
    "parallel_tool_calls": [True, False],
    "functions": [[{"name": "f"}]],
    "function_call": ["auto", {"name": "f"}],
    "logprobs": [True, 0, "false"],
    "top_logprobs": [0, 5],
    "logit_bias": [{"1": -100}, []],
    "presence_penalty": [0.1, -2, False, "0"],
    "frequency_penalty": [2, False, "0"],
    "response_format": [{"type": "json_object"}, {"type": "json_schema", "json_schema": {}}, "text"],
}


def test_the_neutral_and_asking_tables_cover_every_unsupported_parameter():
    assert set(NEUTRAL_VALUES) == set(ASKING_VALUES) == set(UNSUPPORTED_PARAMETERS)


@pytest.mark.parametrize("name,value", [(n, v) for n, values in NEUTRAL_VALUES.items() for v in values], ids=repr)
def test_an_unsupported_parameter_asking_for_nothing_is_accepted(name, value):
    parse_chat_request({"messages": USER, name: value}, max_tokens_limit=10)


@pytest.mark.parametrize("name,value", [(n, v) for n, values in ASKING_VALUES.items() for v in values], ids=repr)
def test_an_unsupported_parameter_asking_for_something_is_refused_by_name(name, value):
    with pytest.raises(OpenAIError) as raised:
        parse_chat_request({"messages": USER, name: value}, max_tokens_limit=10)
    assert (raised.value.status_code, raised.value.param, raised.value.code) == (400, name, "unsupported_parameter")
    assert raised.value.message.startswith(f"Unsupported parameter: '{name}' is not supported by this server")


def test_max_completion_tokens_is_checked_like_max_tokens():
    with pytest.raises(OpenAIError) as raised:
        parse_chat_request({"messages": USER, "max_completion_tokens": 11}, max_tokens_limit=10)
    assert raised.value.param == "max_completion_tokens"
    assert (
        parse_chat_request({"messages": USER, "max_completion_tokens": 10}, max_tokens_limit=10).requested_max_tokens
        == 10
    )
