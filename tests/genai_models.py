"""A tiny causal LM *with a tokenizer* on disk, for the decoder-folder tests (no download).

The tokenizer is a byte-level BPE trained in milliseconds on a few sentences (the scheme of
GPT-2 and SmolLM2), with a ChatML chat template; the model is a random LLaMA whose vocabulary is
the tokenizer's. Larger-than-default initial weights give logits with clear winners, so greedy
continuations vary instead of repeating one near-tie token.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = ("The capital of France is Paris. Once upon a time, there was a fox. def fibonacci(n): return n",
          "Pruning removes channels from a neural network, and the compiled model still talks.",
          "What is the capital of France? It is Paris, a city on the Seine.")
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML special tokens and chat template."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(CORPUS) * 10, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                                unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llm_dir(path: Path, *, tied: bool = True, seed: int = 0) -> Path:
    """Write a random LLaMA (GQA, 2 layers) and its tokenizer as a Hugging Face directory at ``path``."""
    import torch
    import transformers

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, tie_word_embeddings=tied, initializer_range=0.2,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
