"""The arithmetic environment's task families, their dataset generator, and the exact answer check.

Short questions a 135M-parameter model answers correctly some of the time, so the reward says something:

* ``add``: the sum of two one-digit numbers ("What is 3 + 5?") -> ``"8"``
* ``first_letter`` / ``last_letter``: of a common short word -> ``"c"``
* ``repeat``: repeat a given word -> ``"apple"``

The check is exact on one canonical extraction, the same rule for every reply: the *last* number in the reply
for number answers, the last standalone letter for letter answers (case-insensitive), the last word for word
answers (case-insensitive). A reply that states the right answer and then a wrong one scores 0.

Regenerate the shipped files with ``python resources_servers/arithmetic/tasks.py`` (fixed seeds, so the files
do not change).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "check_answer", "extract_answer", "make_rows"]

FAMILIES = ("add", "first_letter", "last_letter", "repeat")
WORDS = (
    "cat",
    "dog",
    "sun",
    "tree",
    "apple",
    "house",
    "river",
    "green",
    "bread",
    "music",
    "water",
    "chair",
    "lamp",
    "book",
    "bird",
    "fish",
    "cloud",
    "stone",
    "milk",
    "door",
)
MAX_OUTPUT_TOKENS = 32
_NUMBER = re.compile(r"-?\d+")
_LETTER = re.compile(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])")
_WORD = re.compile(r"[A-Za-z]+")


def _task(rng: random.Random, family: str) -> tuple[str, str]:
    if family == "add":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return f"What is {a} + {b}?", str(a + b)
    word = rng.choice(WORDS)
    if family == "first_letter":
        return f"What is the first letter of the word '{word}'?", word[0]
    if family == "last_letter":
        return f"What is the last letter of the word '{word}'?", word[-1]
    if family == "repeat":
        return f"Repeat the word '{word}'.", word
    raise ValueError(f"unknown task family {family!r}; choose one of {', '.join(FAMILIES)}")


def make_rows(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` dataset rows cycling through the families; deterministic for a given seed."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        family = FAMILIES[i % len(FAMILIES)]
        question, answer = _task(rng, family)
        rows.append(
            {
                "responses_create_params": {
                    "input": [{"role": "user", "content": question}],
                    "max_output_tokens": MAX_OUTPUT_TOKENS,
                },
                "task": family,
                "expected_answer": answer,
            }
        )
    return rows


def extract_answer(family: str, text: str) -> str | None:
    """The reply's answer under the family's rule, or None when the reply holds nothing of that kind."""
    if family == "add":
        found = _NUMBER.findall(text)
    elif family in ("first_letter", "last_letter"):
        found = _LETTER.findall(text)
    elif family == "repeat":
        found = _WORD.findall(text)
    else:
        raise ValueError(f"unknown task family {family!r}; choose one of {', '.join(FAMILIES)}")
    return found[-1] if found else None


def check_answer(family: str, text: str, expected: str) -> bool:
    answer = extract_answer(family, text)
    if answer is None:
        return False
    return answer == expected if family == "add" else answer.lower() == expected.lower()


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    data = Path(__file__).resolve().parent / "data"
    _write(data / "example.jsonl", make_rows(8, seed=5))
    _write(data / "train.jsonl", make_rows(200, seed=11))
