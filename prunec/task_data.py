"""Task data of the gate's generation metrics: questions with answers, documents with summaries, prompts.

Every malformed record is a one-line :class:`ConfigError` naming the file, the line and the expected form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prunec.calibration import jsonl_records
from prunec.errors import ConfigError


@dataclass(frozen=True)
class Question:
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Document:
    document: str
    summary: str


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _require_jsonl(path: Path, example: str) -> None:
    if path.suffix != ".jsonl":
        raise ConfigError(f"{path} must be JSONL (.jsonl), one {example} per line")


def read_questions(path: Path) -> list[Question]:
    """``{"prompt": "...", "answers": ["...", ...]}`` per line."""
    example = '{"prompt": "What is the capital of France?", "answers": ["Paris"]}'
    _require_jsonl(path, example)
    out = []
    for i, record in jsonl_records(path):
        answers = record.get("answers") if isinstance(record, dict) else None
        if not isinstance(record, dict) or not _nonempty_str(record.get("prompt")) or not isinstance(answers, list) \
                or not answers or not all(_nonempty_str(a) for a in answers):
            raise ConfigError(f"{path}:{i} needs a string 'prompt' and a non-empty list 'answers' of strings, e.g. "
                              f"{example}")
        out.append(Question(record["prompt"], tuple(answers)))
    if not out:
        raise ConfigError(f"{path} holds no questions; give one {example} per line")
    return out


def read_documents(path: Path) -> list[Document]:
    """``{"document": "...", "summary": "..."}`` per line."""
    example = '{"document": "...", "summary": "..."}'
    _require_jsonl(path, example)
    out = []
    for i, record in jsonl_records(path):
        if not isinstance(record, dict) or not _nonempty_str(record.get("document")) \
                or not _nonempty_str(record.get("summary")):
            raise ConfigError(f"{path}:{i} needs non-empty strings 'document' and 'summary', e.g. {example}")
        out.append(Document(record["document"], record["summary"]))
    if not out:
        raise ConfigError(f"{path} holds no documents; give one {example} per line")
    return out


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-blank line of a text file, or the ``"prompt"`` of each JSONL record
    (so a qa file serves as prompts too)."""
    if path.suffix == ".jsonl":
        out = []
        for i, record in jsonl_records(path):
            if not isinstance(record, dict) or not _nonempty_str(record.get("prompt")):
                raise ConfigError(f"{path}:{i} needs a string 'prompt'; or give a text file with one prompt per line")
            out.append(record["prompt"])
    else:
        out = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out:
        raise ConfigError(f"{path} holds no prompts; give one per line")
    return out
