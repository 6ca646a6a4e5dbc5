import pytest

from deepdive.errors import RecipeError
from deepdive.rewards import REWARDS, accuracy, completion_text, format, get_reward_funcs, length


def reply(text):
    return [{"role": "assistant", "content": text}]


COMPLETIONS = [
    reply("12 + 30\n2+0=2, write 2\n1+3=4, write 4\nAnswer: 42"),  # right
    reply("12 + 30\nAnswer: 41"),  # wrong
    reply("12 + 30\n2+0=2, write 2"),  # malformed: no final answer
    reply(""),  # empty
]


def test_accuracy_uses_the_task_checker():
    scores = accuracy(COMPLETIONS, task=["arithmetic"] * 4, answer=["42"] * 4)
    assert scores == [1.0, 0.0, 0.0, 0.0]


def test_accuracy_mixes_tasks_in_one_batch():
    completions = [reply("Answer: 3"), reply("I don't know of a character named Zorbin in Shakespeare's plays.")]
    assert accuracy(completions, task=["spelling", "shakespeare"], answer=["3", "I don't know"]) == [1.0, 1.0]


def test_format_rewards_a_parseable_final_answer():
    assert format(COMPLETIONS, task=["arithmetic"] * 4) == [1.0, 1.0, 0.0, 0.0]


def test_length_penalises_only_beyond_the_limit():
    ids = [[1] * 10, [1] * 96, [1] * 144, [1] * 500, []]
    assert length([reply("")] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, 0.0]


def test_plain_string_completions_work_too():
    assert completion_text("Answer: 7") == "Answer: 7" and completion_text(None) == ""
    assert accuracy(["Answer: 7"], task=["arithmetic"], answer=["7"]) == [1.0]


def test_after_tool_calls_only_the_final_answer_is_scored():
    """The tool's result carries the right number: a reply that calls and then answers wrongly earns nothing."""
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": "3 + 4"}}}
    answered = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "7"},
        {"role": "assistant", "content": "Answer: 8"},
    ]
    assert completion_text(answered) == "Answer: 8"
    assert accuracy([answered], task=["arithmetic"], answer=["7"]) == [0.0]
    assert accuracy([answered[:2] + [{"role": "assistant", "content": "Answer: 7"}]], ["arithmetic"], ["7"]) == [1.0]


def test_registry_by_name():
    assert get_reward_funcs(["accuracy", "format"]) == [REWARDS["accuracy"], REWARDS["format"]]
    with pytest.raises(
        RecipeError, match="unknown reward 'kindness'; valid rewards: accuracy, format, length, labeler, reward_model"
    ):
        get_reward_funcs(["accuracy", "kindness"])
    with pytest.raises(RecipeError, match="reward_weights: 1 weights for 2 reward_funcs"):
        get_reward_funcs(["accuracy", "format"], [1.0])
    with pytest.raises(RecipeError, match="name at least one reward"):
        get_reward_funcs([])
