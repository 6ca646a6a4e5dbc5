"""Conversations: the chat template that turns messages into tokens, and the interactive chat loop.

The lecture's point about assistants is that a conversation is just another token sequence. The template is
ChatML-style with the special tokens reserved at pretraining (`<|im_start|>role\\n ... <|im_end|>`), opened by
`<|endoftext|>` as every pretraining document was. The assistant's content and its closing `<|im_end|>` sit
inside `{% generation %}` markers, so TRL's `assistant_only_loss` trains exactly those tokens: the model
learns to answer and, just as important, to stop. `<|im_end|>` is the generation EOS of a chat model.
"""

import sys
from threading import Thread

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

from deepdive.errors import DataError
from deepdive.tokenizer import END_OF_TEXT, IM_END, IM_START


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

ROLES = ("system", "user", "assistant")


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


def load_chat_model(model_args, trust_remote_code: bool = False):
    """(model, tokenizer) for the SFT and GRPO recipes: TRL `ModelConfig` fields, safetensors weights only,
    and a tokenizer that carries a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, trust_remote_code=trust_remote_code)
    tokenizer = add_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        dtype=model_args.dtype if model_args.dtype not in (None, "auto") else None,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    return model, tokenizer


def validate_conversation(messages, where: str) -> None:
    """One-line DataError for a conversation the template cannot train on."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise DataError(f"{where}: unknown role {role!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: a {role} message has no text 'content'")
        if role == "assistant" and not message["content"].strip():
            raise DataError(f"{where}: an assistant turn is empty")
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: the conversation has no assistant turn to learn from")


def validate_conversations(dataset, where: str) -> None:
    """Check every row of a conversational dataset before training starts."""
    if "messages" not in dataset.column_names:
        raise DataError(f"{where}: the dataset has no 'messages' column (it has {', '.join(dataset.column_names)})")
    for index, messages in enumerate(dataset["messages"]):
        validate_conversation(messages, f"{where} row {index}")


@torch.no_grad()
def reply(model, tokenizer, messages, max_new_tokens=256, temperature=0.0, top_k=50, stream=None, seed=0) -> str:
    """The assistant's next turn for `messages`; streamed to `stream` as it is generated when given."""
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    greedy = temperature == 0
    torch.manual_seed(seed)
    kwargs = dict(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else temperature,
        top_k=None if greedy or top_k == 0 else top_k,
        top_p=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )
    if stream is None:
        output = model.generate(**kwargs)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = Thread(target=model.generate, kwargs={**kwargs, "streamer": streamer})
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        stream.write(piece)
        stream.flush()
    thread.join()
    stream.write("\n")
    return "".join(pieces)


def fit_to_context(messages: list[dict], tokenizer, context_length: int, reserve: int) -> list[dict]:
    """Drop the oldest exchanges until the prompt leaves `reserve` tokens of the context for the reply.

    A small model has a short context (256 tokens for the tiny recipe); a long chat keeps its latest turns.
    The newest user message is always kept.
    """
    kept = list(messages)
    while len(kept) > 1:
        length = len(tokenizer.apply_chat_template(kept, add_generation_prompt=True, return_dict=True)["input_ids"])
        if length + reserve <= context_length:
            break
        kept = kept[2:] if kept[0]["role"] != "system" else kept[:1] + kept[3:]
    return kept


def chat_loop(model, tokenizer, temperature=0.7, top_k=50, max_new_tokens=256, seed=0, read=input, out=sys.stdout):
    """Multi-turn chat on the terminal: `/reset` forgets the conversation, `/quit` (or Ctrl-D) leaves."""
    out.write("deepdive chat. /reset starts over, /quit leaves.\n")
    messages = []
    while True:
        try:
            text = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return messages
        if text == "/quit":
            return messages
        if text == "/reset":
            messages = []
            out.write("(conversation reset)\n")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        context = getattr(model.config, "max_position_embeddings", None) if model is not None else None
        budget = min(max_new_tokens, context // 2) if context else max_new_tokens
        if context:
            messages = fit_to_context(messages, tokenizer, context, budget)
        out.write("deepdive> ")
        answer = reply(model, tokenizer, messages, budget, temperature, top_k, stream=out, seed=seed)
        messages.append({"role": "assistant", "content": answer})
        seed += 1
