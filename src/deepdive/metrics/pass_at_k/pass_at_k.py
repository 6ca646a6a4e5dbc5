"""pass@k: the chance that at least one of k sampled replies to a problem is correct."""

from math import comb

import datasets
import evaluate

from deepdive.tasks import get_task


_DESCRIPTION = """
For each problem, n >= k replies are sampled and c of them pass the task's checker; the unbiased estimate of
pass@k is 1 - C(n - c, k) / C(n, k), averaged over problems (Chen et al., 2021, "Evaluating Large Language
Models Trained on Code"). pass@1 over greedy replies is plain accuracy; pass@k over samples shows what the
model can reach with a few tries, which is what RL on verifiable answers learns to turn into pass@1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: for each problem, a list of n sampled replies (the same n for all problems).
    references: the expected answer of each problem.
    tasks: the task family of each problem.
    k: the k values to report, each <= n (default [1]).
Returns:
    pass@<k> for each k, and n, the samples per problem.
"""


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which `correct` pass."""
    if n - correct < k:
        return 1.0
    return 1.0 - comb(n - correct, k) / comb(n, k)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PassAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Value("string"),
                    "tasks": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, tasks, k=(1,)):
        sizes = {len(replies) for replies in predictions}
        if len(sizes) != 1:
            raise ValueError(f"predictions: every problem needs the same number of samples, got {sorted(sizes)}")
        (n,) = sizes
        if any(not 1 <= value <= n for value in k):
            raise ValueError(f"k: each k must be between 1 and the {n} samples per problem, got {list(k)}")
        counts = [
            sum(get_task(name).check(reply, expected) for reply in replies)
            for replies, expected, name in zip(predictions, references, tasks, strict=True)
        ]
        result = {f"pass@{value}": sum(pass_at_k(n, c, value) for c in counts) / len(counts) for value in k}
        result["n"] = n
        return result
