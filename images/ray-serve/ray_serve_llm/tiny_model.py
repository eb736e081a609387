"""A tiny Mistral-architecture chat model, made offline in well under a second.

It stands in for Mistral-7B-Instruct wherever no accelerator and no Hugging Face download
is available: the unit and integration tests, and the local HA demo. It is real in every
way the serving code cares about (a `MistralForCausalLM` checkpoint, a fast tokenizer with
the Mistral-Instruct chat template, BOS/EOS/UNK/PAD, `[INST]`/`[/INST]` special tokens)
and random in the one way it does not (its weights), so its answers are gibberish.

The tokenizer is a BPE with the Metaspace ("▁") pre-tokenizer and decoder, as Mistral's
own: a byte-level tokenizer would make random weights emit broken UTF-8, which
`TextIteratorStreamer` then holds back.

    python -m ray_serve_llm.tiny_model OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
INST_OPEN, INST_CLOSE = "[INST]", "[/INST]"

# The chat template Mistral-7B-Instruct-v0.2 ships today: an optional leading system
# message folded into the first user turn, strictly alternating user/assistant turns after
# it, and a Jinja `raise_exception` for anything else (the server turns that into a 400).
MISTRAL_INSTRUCT_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}"
    "{{- ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)

# Enough varied English for a BPE vocabulary of a few hundred tokens.
_CORPUS = [
    "Ray Serve runs the model on every worker node and keeps serving while the head restarts.",
    "Amazon EKS schedules the Ray pods on Inferentia2 and GPU nodes in three availability zones.",
    "The quick brown fox jumps over the lazy dog near the river bank on a sunny morning.",
    "What is the capital of France? Paris is the capital and the largest city of France.",
    "Tell me a short story about a robot that learns to paint pictures of the sea.",
    "Hello! How can I help you today? I am a helpful assistant and I answer questions.",
    "Large language models generate text one token at a time, streaming words to the user.",
    "Redis stores the state of the global control service so that a new head can recover it.",
    "Numbers like 1, 2, 3, 10, 42 and 2026 appear in questions, answers and dates.",
    "Please explain in simple words why the sky is blue and why sunsets are red and orange.",
]

VOCAB_SIZE = 512


def build_tokenizer():
    """A fast tokenizer trained on the spot, wrapped the way Mistral's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[UNK, BOS, EOS, PAD, INST_OPEN, INST_CLOSE],
        # Every printable ASCII character (and newline) is in the vocabulary, so any
        # English prompt tokenizes without <unk>.
        initial_alphabet=[chr(c) for c in range(33, 127)] + ["\n"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[INST_OPEN, INST_CLOSE],
        padding_side="left",
        model_max_length=2048,
    )
    wrapped.chat_template = MISTRAL_INSTRUCT_CHAT_TEMPLATE
    return wrapped


def build_model(tokenizer, *, seed: int = 0):
    """A random `MistralForCausalLM` of about 135k parameters."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny_model(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Writes the tiny model folder (config, weights, tokenizer, chat_template.jinja)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # transformers 5 already writes the template as chat_template.jinja; make sure the file
    # is there whatever the version, since vLLM and the local demo read it from the folder.
    template = out / "chat_template.jinja"
    if not template.exists():
        template.write_text(MISTRAL_INSTRUCT_CHAT_TEMPLATE)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_serve_llm.tiny_model",
        description="Write a tiny random Mistral-architecture chat model to OUT_DIR (offline).",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the model to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    path = save_tiny_model(args.out_dir, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
