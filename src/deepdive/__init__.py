"""deepdive: build a small ChatGPT-like assistant in the three stages of the lecture, on the Hugging Face stack.

pretraining (a token simulator) -> supervised fine-tuning (an assistant) -> reinforcement learning
(practice on checkable problems). The recipe scripts in `recipes/` are thin; this package holds the pieces
they share: corpora, tokenizer, model configs, metrics, a run's start and finish, the Trainer's hooks and the
command line.
"""

__version__ = "0.1.0"
