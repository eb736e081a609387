"""The serving engines of images/ray-serve behind one interface.

The transformers engine runs here, on the tiny model of the shared Serve backend
(tests/serve_backend.py). The accelerator engines (vLLM, Neuron) cannot: their pure parts
(engine arguments, environment, the compiled-artifacts cache) are tested without them.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.serve_backend import USER

# isort: split
from ray_serve_llm.args import AppArgs
from ray_serve_llm.compiled_artifacts import MARKER, ArtifactCache, CompileKey, split_s3_uri
from ray_serve_llm.engines import ChatTemplateError, Prompt, SamplingParams, load_engine
from ray_serve_llm.engines.neuron_engine import NEURON_MAX_NUM_SEQS, NeuronEngine
from ray_serve_llm.engines.vllm_engine import VllmEngine

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


# --- The engine interface, on the transformers engine (no server) -----------------------


@pytest.fixture(scope="module")
def engine(backend):
    args = AppArgs.parse({**backend.args, "served_model_name": None})
    return load_engine(args)


async def _collect(engine, prompt, params, limit=None):
    chunks = []
    generator = engine.generate(prompt, params)
    async for chunk in generator:
        chunks.append(chunk)
        if limit and len(chunks) >= limit:
            await generator.aclose()
            break
    return chunks


def test_engine_renders_with_the_tokenizer_chat_template(engine):
    prompt = engine.render([{"role": "system", "content": "S"}, {"role": "user", "content": "Hello"}])
    text = engine.tokenizer.decode(list(prompt.token_ids))
    assert text.startswith("<s>") and text.count("<s>") == 1
    assert "[INST]" in text and text.rstrip().endswith("[/INST]")


def test_engine_refuses_what_the_template_refuses(engine):
    with pytest.raises(ChatTemplateError, match="alternate"):
        engine.render([{"role": "assistant", "content": "first"}])


def test_engine_streams_non_empty_pieces_and_a_final_chunk(engine):
    prompt = engine.render(USER)
    chunks = asyncio.run(_collect(engine, prompt, SamplingParams(max_tokens=10, temperature=0)))
    *pieces, last = chunks
    assert pieces and all(chunk.text for chunk in pieces)
    assert last.finish_reason in ("stop", "length") and last.completion_tokens <= 10


def test_engine_stops_generating_when_the_consumer_goes_away(engine):
    async def leave_early():
        before = engine.cancelled_generations
        # Long enough that it cannot finish on its own within the wait below.
        chunks = await _collect(engine, engine.render(USER), SamplingParams(max_tokens=1500), limit=2)
        for _ in range(200):
            if engine.active_generations == 0:
                break
            await asyncio.sleep(0.01)
        return chunks, engine.cancelled_generations - before

    chunks, cancelled = asyncio.run(leave_early())
    assert len(chunks) == 2
    assert engine.active_generations == 0
    assert cancelled == 1


def test_tiny_model_cli_writes_a_mistral_folder(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from ray_serve_llm.tiny_model import main

    assert main([str(tmp_path / "tiny")]) == 0
    folder = tmp_path / "tiny"
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "mistral" and config.sliding_window is None
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        64,
        2,
        4,
        2,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "left"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token) == (
        "<s>",
        "</s>",
        "<unk>",
        "<pad>",
    )
    assert len(tokenizer.encode("[INST]", add_special_tokens=False)) == 1
    assert tokenizer.unk_token_id not in tokenizer.encode("Hello, world! 42?\n", add_special_tokens=False)


# --- Accelerator engines: their pure parts ----------------------------------------------


def test_neuron_engine_shards_over_two_cores_with_continuous_batching():
    kwargs = NeuronEngine.engine_kwargs("/models/mistral", tensor_parallel_degree=2, max_model_len=4096)
    assert kwargs["tensor_parallel_size"] == 2
    assert kwargs["max_num_seqs"] == NEURON_MAX_NUM_SEQS
    neuron = kwargs["additional_config"]["override_neuron_config"]
    assert neuron["is_continuous_batching"] is True
    assert (neuron["tp_degree"], neuron["seq_len"], neuron["batch_size"]) == (2, 4096, NEURON_MAX_NUM_SEQS)


def test_neuron_engine_points_nxdi_at_the_compiled_artifacts():
    environ: dict[str, str] = {}
    NeuronEngine.configure_environment("/tmp/neuron-compiled-artifacts/x", environ)
    assert environ == {
        "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
        "NEURON_COMPILED_ARTIFACTS": "/tmp/neuron-compiled-artifacts/x",
    }


def test_vllm_engine_keeps_tensor_parallel_workers_inside_the_replica():
    kwargs = VllmEngine.engine_kwargs("/models/m", tensor_parallel_degree=4, max_model_len=8192)
    assert (kwargs["tensor_parallel_size"], kwargs["max_model_len"]) == (4, 8192)
    assert kwargs["distributed_executor_backend"] == "mp"


class FakeS3:
    """Just what ArtifactCache calls, over a dict."""

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.writes: list[str] = []

    def list_objects_v2(self, Bucket, Prefix, **_):
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        return {"Contents": [{"Key": k} for k in keys], "IsTruncated": False}

    def download_file(self, bucket, key, filename):
        with open(filename, "wb") as f:
            f.write(self.objects[(bucket, key)])

    def upload_file(self, filename, bucket, key):
        with open(filename, "rb") as f:
            self.objects[(bucket, key)] = f.read()
        self.writes.append(key)

    def put_object(self, Bucket, Key, Body):
        self.objects[(Bucket, Key)] = Body
        self.writes.append(Key)


KEY = CompileKey("mistralai/Mistral-7B-Instruct-v0.2", 2, 4096, 4, "0.9.0")


def test_compile_key_separates_configurations():
    assert KEY.slug == "mistralai--Mistral-7B-Instruct-v0.2/tp2-len4096-seqs4-nxdi0.9.0"
    other = CompileKey("mistralai/Mistral-7B-Instruct-v0.2", 2, 8192, 4, "0.9.0")
    assert other.slug != KEY.slug
    assert split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")


def test_s3_cache_miss_then_publish_then_hit(tmp_path):
    s3 = FakeS3()
    first = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path / "worker1", s3=s3)
    assert first.fetch() is False
    (first.local_dir / "model.pt").write_bytes(b"compiled")  # what NxD Inference writes
    (first.local_dir / "neuron_config.json").write_text("{}")
    first.publish()
    prefix = f"neuron/{KEY.slug}"
    assert s3.writes[-1] == f"{prefix}/{MARKER}", "the marker is written last"
    assert set(s3.writes) == {f"{prefix}/model.pt", f"{prefix}/neuron_config.json", f"{prefix}/{MARKER}"}

    second = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path / "worker2", s3=s3)
    assert second.fetch() is True
    assert (second.local_dir / "model.pt").read_bytes() == b"compiled"
    assert not (second.local_dir / MARKER).exists()
    s3.writes.clear()
    second.publish()
    assert s3.writes == [], "artifacts that came from the cache are not uploaded again"


def test_s3_cache_ignores_a_half_uploaded_compile(tmp_path):
    s3 = FakeS3()
    s3.objects[("bucket", f"neuron/{KEY.slug}/model.pt")] = b"partial"
    cache = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path, s3=s3)
    assert cache.fetch() is False
    assert not (cache.local_dir / "model.pt").exists()


def test_local_cache_is_a_folder_per_configuration(tmp_path):
    cache = ArtifactCache(str(tmp_path), KEY)
    assert cache.local_dir == tmp_path / KEY.slug
    assert cache.fetch() is False
    (cache.local_dir / "model.pt").write_bytes(b"x")
    assert ArtifactCache(str(tmp_path), KEY).fetch() is True


def test_prompt_counts_tokens():
    assert Prompt(token_ids=(1, 2, 3)).num_tokens == 3
