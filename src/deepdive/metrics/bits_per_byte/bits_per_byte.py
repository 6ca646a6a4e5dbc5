"""Bits per byte: how well a language model predicts text, independent of its tokenizer."""

import math

import datasets
import evaluate


_DESCRIPTION = """
Bits per byte = (summed negative log-likelihood of the scored tokens, in nats) / (ln 2 x the UTF-8 bytes those
tokens decode to). Each prediction is the summed NLL of one scored span of text and its reference the span's
byte count; the metric pools all spans, so it weighs every byte equally. Lower is better; a model that knew
nothing about 8-bit text would score 8.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: summed NLL (nats) of each scored span.
    references: UTF-8 bytes of each scored span.
Returns:
    bits_per_byte: the pooled bits per byte.
    bytes: the bytes scored.
Example:
    >>> metric = evaluate.load("src/deepdive/metrics/bits_per_byte")
    >>> metric.compute(predictions=[math.log(2) * 8], references=[4])
    {'bits_per_byte': 2.0, 'bytes': 4}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        total_bytes = int(sum(references))
        if total_bytes <= 0:
            raise ValueError("references: no bytes to score; each reference is the byte count of a scored span")
        return {"bits_per_byte": float(sum(predictions)) / (math.log(2) * total_bytes), "bytes": total_bytes}
