"""Train the byte-level BPE tokenizer that turns text into the tokens the model simulates, and the chat template.

Byte-level, so any Unicode string round-trips exactly and no input is ever "unknown". Digits are split one by
one before BPE, so "1234" is always four tokens and arithmetic in the SFT and RL stages sees single digits
(the lecture's "models need tokens to think"). The special tokens for documents and chat turns are reserved
here, at pretraining time, so later stages never resize the embedding. Trained on the train split only.
"""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from deepdive.errors import DataError


END_OF_TEXT = "<|endoftext|>"  # closes every document; also the BOS/EOS of the base model
PAD = "<|pad|>"  # never trained on; separate from EOS so that SFT can learn to stop
IM_START = "<|im_start|>"  # opens a chat turn (ChatML style): <|im_start|>role\n ... <|im_end|>
IM_END = "<|im_end|>"  # closes a chat turn; the assistant's end-of-turn token
SPECIAL_TOKENS = [END_OF_TEXT, PAD, IM_START, IM_END]


def train_tokenizer(texts, vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train byte-level BPE with single-digit splitting on an iterable of strings."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise DataError(f"vocab_size: must exceed the 256 byte tokens and {len(SPECIAL_TOKENS)} specials")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        clean_up_tokenization_spaces=False,
    )


def token_byte_lengths(tokenizer) -> list[int]:
    """UTF-8 bytes each token id stands for; special tokens count 0 (they are not text).

    In byte-level BPE every character of a token's string is one byte, so a token's length is its byte count.
    """
    special_ids = set(tokenizer.all_special_ids)
    lengths = [0] * len(tokenizer)
    for token, token_id in tokenizer.get_vocab().items():
        lengths[token_id] = 0 if token_id in special_ids else len(token)
    return lengths


def bytes_per_token(tokenizer, texts) -> float:
    """Average UTF-8 bytes per token over `texts` (higher means a more compact tokenizer)."""
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    n_tokens = sum(
        len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    )
    return n_bytes / max(n_tokens, 1)


# --- The chat template: a conversation as tokens ------------------------------------------------------------
# A conversation is just another token sequence. The template is ChatML-style with the special tokens reserved
# above (`<|im_start|>role\n ... <|im_end|>`), opened by `<|endoftext|>` as every pretraining document was. The
# assistant's content and its closing `<|im_end|>` sit inside `{% generation %}` markers, so TRL's
# `assistant_only_loss` trains exactly those tokens: the model learns to answer and, just as important, to stop.

ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role ' + message['role'] + '; valid roles: system, user, assistant') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def add_chat_template(tokenizer, where: str = "model_name_or_path"):
    """Give `tokenizer` deepdive's chat template (if it has none) and make `<|im_end|>` its EOS.

    Raises DataError when the tokenizer lacks the chat special tokens (e.g. a tokenizer from elsewhere).
    """
    vocabulary = tokenizer.get_vocab()
    if tokenizer.chat_template is None:
        missing = [token for token in (END_OF_TEXT, IM_START, IM_END) if token not in vocabulary]
        if missing:
            raise DataError(
                f"{where}: the tokenizer has no chat template and lacks the chat tokens {', '.join(missing)}; "
                "use a model pretrained by deepdive or one with a chat template"
            )
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.bos_token = END_OF_TEXT
        tokenizer.eos_token = IM_END
    return tokenizer
