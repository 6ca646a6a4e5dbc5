"""Task accuracy: the share of replies that each deepdive task family's own checker accepts."""

from collections import defaultdict

import datasets
import evaluate

from deepdive.tasks import get_task


_DESCRIPTION = """
Scores chat replies with the checker of the task family that asked the question (`deepdive.tasks`): the final
`Answer: N` of an arithmetic or spelling reply, the play named (or an honest "I don't know") for a Shakespeare
question, the facts of an identity answer. These are the checkers the RL stage uses as its accuracy reward,
so "correct" means the same thing in every stage. Returns the overall accuracy and one per family.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: reply texts.
    references: expected answers, as the task family writes them.
    tasks: the task family of each question (arithmetic, identity, shakespeare, spelling).
Returns:
    accuracy: share of all replies accepted; <task>_accuracy: the same per family.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TaskAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "tasks": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, tasks):
        correct = defaultdict(list)
        for reply, expected, name in zip(predictions, references, tasks, strict=True):
            correct[name].append(get_task(name).check(reply, expected))
        scores = [score for scores in correct.values() for score in scores]
        result = {"accuracy": sum(scores) / len(scores)}
        result.update({f"{name}_accuracy": sum(scores) / len(scores) for name, scores in sorted(correct.items())})
        return result
