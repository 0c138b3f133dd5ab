"""Turning a teacher's text into one of the task's labels, strictly, and logprobs into soft labels.

Parsing forgives only what carries no meaning: case, surrounding whitespace and quotes, a final
period, and `_` / `-` / spaces inside a label ("Card arrival" is `card_arrival`). A label's
description, given verbatim, also names it. Anything else ("I think card_arrival", two labels, an
unknown word) is not an answer: the caller stores it as rejected with the reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

NONE = "none"


def normalise(text: str) -> str:
    text = text.strip().strip("`'\"“”‘’").strip().rstrip(".").strip()
    return re.sub(r"[\s_\-]+", " ", text).casefold()


@dataclass
class Parsed:
    label: str | None  # None with no reason: the teacher said "none of these"
    reason: str | None = None
    span: tuple[int, int] | None = None  # where the label's text lies in the raw answer


class LabelParser:
    def __init__(self, labels: list[str], descriptions: dict[str, str] | None = None, allow_none: bool = False):
        self.labels = labels
        self.allow_none = allow_none
        self.lookup: dict[str, str] = {}
        for name, text in (descriptions or {}).items():
            self.lookup.setdefault(normalise(text), name)
        for name in labels:  # a label's own name wins over another label's description
            self.lookup[normalise(name)] = name

    def parse(self, raw: str, json_field: str | None = None) -> Parsed:
        """The label in `raw` (plain text, or a JSON object's `json_field`), or why there is none."""
        text, offset = raw, 0
        if json_field is not None:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                return Parsed(None, "answer is not the JSON object the schema asks for")
            if not isinstance(obj, dict) or not isinstance(obj.get(json_field), str):
                return Parsed(None, f"answer has no string '{json_field}' field")
            text = obj[json_field]
            at = raw.find(f'"{json_field}"')
            offset = raw.find(json.dumps(text)[1:-1], at + len(json_field) + 2) if at >= 0 else -1
            if offset < 0:
                offset = 0
                raw = text  # escapes or odd spacing: no reliable span in the raw text
        elif text.strip():
            offset = len(text) - len(text.lstrip())
            text = text.strip()
        if not text.strip():
            return Parsed(None, "empty answer")
        name = normalise(text)
        if self.allow_none and name in (NONE, "none of these", "none of the above"):
            return Parsed(None, None, (offset, offset + len(text)))
        if name in self.lookup:
            return Parsed(self.lookup[name], None, (offset, offset + len(text)))
        return Parsed(None, f"answer {text[:80]!r} is not one of the task's labels")


def soft_labels(
    content: str, tokens: list[dict], span: tuple[int, int], labels: list[str], chosen: str
) -> np.ndarray | None:
    """Probabilities over `labels` from the answer's token logprobs (OpenAI `logprobs.content`).

    The chosen label gets the probability of its whole token path. At each position inside the
    label's span, each alternative token (`top_logprobs`) is a branch: its probability (path so far
    times its own) goes to the labels whose text starts with what that branch would have written,
    shared equally when several do. Branches that lead to no label are dropped; the rest is
    normalised. None when the server gave no usable logprobs.
    """
    if not tokens:
        return None
    start, end = span
    prefix = content[:start]
    keys = [normalise(name) for name in labels]
    mass = np.zeros(len(labels), dtype=np.float64)
    path, offset = 0.0, 0
    for pos in tokens:
        tok = pos.get("token")
        lp = pos.get("logprob")
        if not isinstance(tok, str) or not isinstance(lp, int | float):
            return None
        if offset + len(tok) > start and offset < end:
            for alt in pos.get("top_logprobs") or []:
                alt_tok, alt_lp = alt.get("token"), alt.get("logprob")
                if not isinstance(alt_tok, str) or not isinstance(alt_lp, int | float) or alt_tok == tok:
                    continue
                written = content[:offset] + alt_tok
                if len(written) <= start or not written.startswith(prefix):
                    continue
                branch = normalise(written[start:])
                if not branch:
                    continue
                hits = [i for i, k in enumerate(keys) if k.startswith(branch) or branch.startswith(k)]
                for i in hits:
                    mass[i] += math.exp(path + alt_lp) / len(hits)
        path += lp
        offset += len(tok)
        if offset >= end:
            break
    if offset < end:
        return None  # the tokens do not cover the answer: not this answer's logprobs
    mass[labels.index(chosen)] += math.exp(path)
    total = mass.sum()
    return (mass / total).astype(np.float32) if total > 0 else None
