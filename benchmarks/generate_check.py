"""Does pruned SmolLM2 still answer "What is the capital of France?" with Paris?

Prunes SmolLM2-135M-Instruct to a non-embedding parameter budget with the CLI's default calibrated
recipe (fluctuation importance, FFN units, least-squares reconstruction; calibration 32 x 512 tokens
of wiki.valid.tokens), writes it back to the Hugging Face class and greedily generates 12 tokens for
the chat-templated question.

    python benchmarks/generate_check.py --data ../shared/data/wikitext2 [--keep 0.8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import prunec
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.models import load_model


def answer(model, tokenizer, question: str) -> str:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--keep", type=float, default=0.8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("smollm2-135m")
    question = "What is the capital of France?"
    print(f"base: {answer(loaded.model, loaded.tokenizer, question)!r}")
    calib = load_calibration(args.data / "wiki.valid.tokens", loaded.tokenizer, CalibrationConfig(32, 512))
    result = prunec.prune(loaded.model, calib[0], budget=f"params={args.keep}", kinds=("channels",),
                          importance="fluctuation", calibration=calib, reconstruct=True)
    pruned = result.to_pretrained()
    kept = result.non_embedding_after / result.non_embedding_before
    print(f"pruned (keep {kept:.3f} of non-embedding params): {answer(pruned, loaded.tokenizer, question)!r}")


if __name__ == "__main__":
    main()
