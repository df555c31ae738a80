"""`crisiswatch sentiment predict`: score JSON lines, learning from the labeled ones (prequential).

Each input line is `{"text": "...", "label": "negative|neutral|positive"}` (label optional); each
output line is `{"label": "...", "negative": 0.93}`, or `null` for a line that could not be read
(with an error naming the line on stderr): not UTF-8 text, not JSON, or not such an object. Input
is read as bytes, so no line stops the stream. A line's prediction is made before its label is
learned.
"""

from __future__ import annotations

from typing import IO, Any, TextIO

import orjson

from crisiswatch.enrich.sentiment import LABELS, SentimentModel
from crisiswatch.mentions import TOO_LONG, numbered_lines


class BadLine(ValueError):
    """An input line that is not a usable JSON object."""


def parse_line(line: bytes | None) -> tuple[str, str | None]:
    """The text and optional label of one input line (None: one too long to read)."""
    if line is None:
        raise BadLine(TOO_LONG)
    try:
        doc: Any = orjson.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadLine("not UTF-8 text") from None
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadLine("expected a JSON object")
    text = doc.get("text")
    if not isinstance(text, str):
        raise BadLine('"text" must be a string')
    label = doc.get("label")
    if label is not None and label not in LABELS:
        raise BadLine(f'"label" must be one of {", ".join(LABELS)} or absent')
    return text, label


def predict_stream(
    inp: IO[bytes], out: TextIO, err: TextIO, learn: bool, model: SentimentModel
) -> int:
    """Score every line of `inp` into `out`; 0 if every line was good, else 1."""
    status = 0
    for number, line in numbered_lines(inp):
        try:
            text, label = parse_line(line)
        except BadLine as exc:
            err.write(f"line {number}: {exc}\n")
            out.write("null\n")
            status = 1
            continue
        score = model.predict_one(text)
        out.write(f'{{"label": "{score.label}", "negative": {round(score.negative, 4)}}}\n')
        if learn and label is not None:
            model.learn_one(text, label)
    out.flush()
    return status
