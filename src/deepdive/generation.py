"""Text generation: continue prompts or answer conversations, streaming the tokens as they are drawn.

Every place that makes a model write goes through `generate` here: the samples logged during training, `deepdive
sample` (the lecture's token simulator), `deepdive chat`, the evaluations and the report card. A prompt is either
text, continued the way a base model was pretrained (after the document opener), or a conversation, answered
through the tokenizer's chat template and stopped at the end of the assistant's turn. `Decoding` holds the knobs
the lecture shows (temperature, top-k, top-p) and a seed: the draw is repeatable and runs on a forked random
state, so generating never changes the random numbers that training draws next. Only the model's own
distribution is decoded: settings in a model folder's generation config (a repetition penalty, a top-k) apply
only where `Decoding` asks for them, so a score means the same for every model. `generate_with_tools` runs the
calls a reply makes (`deepdive.tools`) and has the model write again with each result in its context, for the
chat, the evaluation and the report alike.
"""

from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, TextStreamer

from deepdive.distributed import is_main_process
from deepdive.errors import DataError
from deepdive.modeling import load_model_and_tokenizer
from deepdive.tokenizer import IM_END
from deepdive.tools import TOOLS, failed, run_tool_call


@dataclass(frozen=True)
class Decoding:
    """How each next token is picked. Temperature 0 is greedy; a top-k of 0 and a top-p of 1 cut nothing."""

    max_new_tokens: int = 160
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    num_samples: int = 1  # replies per prompt; sampled decoding only
    seed: int = 0


SAMPLING = Decoding(max_new_tokens=256, temperature=0.8, top_k=50)  # what `deepdive sample` and the logs use


@dataclass(frozen=True)
class Completion:
    text: str
    stopped: bool  # the model closed its text itself (end of turn or of document) before the token budget ran out


def default_generation_config(tokenizer) -> GenerationConfig:
    """The generation settings saved with every model: `SAMPLING`, stopping at the tokenizer's EOS."""
    return GenerationConfig(
        do_sample=True,
        temperature=SAMPLING.temperature,
        top_k=SAMPLING.top_k,
        max_new_tokens=SAMPLING.max_new_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# --- Generating -----------------------------------------------------------------------------------------------


class _FlushingStreamer(TextStreamer):
    """Writes each piece of text to `stream` as soon as it is decoded, and a newline at the end."""

    def __init__(self, tokenizer, stream):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


def stop_token_id(tokenizer, chat: bool) -> int:
    """The token that ends a reply: the end of the assistant's turn for a conversation, else the end of document."""
    if chat and IM_END in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(IM_END)
    return tokenizer.eos_token_id


def _encode(tokenizer, prompts: list, chat: bool, device, tools=None):
    if chat:
        inputs = tokenizer.apply_chat_template(
            prompts, tools=tools, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
        )
    else:  # a base model's documents open with its BOS (deepdive: <|endoftext|>), so its continuations do too
        texts = [(tokenizer.bos_token or "") + prompt for prompt in prompts]
        inputs = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    return inputs.to(device)


def _decoding_arguments(decoding: Decoding) -> dict:
    if decoding.temperature == 0:
        if decoding.num_samples != 1:
            raise ValueError(f"num_samples: greedy decoding gives one reply per prompt, not {decoding.num_samples}")
        return dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    return dict(do_sample=True, temperature=decoding.temperature, top_k=decoding.top_k, top_p=decoding.top_p)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list,
    decoding: Decoding = Decoding(),
    batch_size: int = 32,
    bf16: bool = False,
    progress: bool = False,
    stream=None,
    tools: list | None = None,
) -> list[Completion]:
    """`decoding.num_samples` completions of each prompt, consecutive per prompt, in the order of `prompts`.

    `prompts` are all texts (continued as a document) or all conversations (lists of {role, content}, answered
    by the assistant). `stream` (a text file) receives the text as it is drawn; it takes one prompt and one
    sample. `bf16` decodes under bfloat16 autocast, for a model in the middle of mixed-precision training.
    `tools` are offered to conversations (listed by the chat template); `generate_with_tools` also runs them.
    """
    if not prompts:
        return []
    chat = not isinstance(prompts[0], str)
    if any(isinstance(prompt, str) == chat for prompt in prompts):
        raise ValueError("prompts: all texts or all conversations, not a mix")
    if stream is not None and (len(prompts) != 1 or decoding.num_samples != 1):
        raise ValueError("stream: streaming shows one completion of one prompt")
    stop = stop_token_id(tokenizer, chat)
    arguments = dict(
        **_decoding_arguments(decoding),
        max_new_tokens=decoding.max_new_tokens,
        num_return_sequences=decoding.num_samples,
        repetition_penalty=1.0,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop,
        streamer=_FlushingStreamer(tokenizer, stream) if stream is not None else None,
    )
    device = next(model.parameters()).device
    cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    per_batch = max(1, batch_size // decoding.num_samples)
    completions = []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(decoding.seed)
            batches = range(0, len(prompts), per_batch)
            for first in tqdm(batches, desc="generating", disable=not (progress and is_main_process())):
                inputs = _encode(tokenizer, prompts[first : first + per_batch], chat, device, tools)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    output = model.generate(**inputs, **arguments)
                for row in output[:, inputs["input_ids"].shape[1] :].tolist():
                    stopped = stop in row
                    tokens = row[: row.index(stop)] if stopped else row
                    completions.append(Completion(tokenizer.decode(tokens, skip_special_tokens=True), stopped))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return completions


# --- Tools: call, read the result, answer ---------------------------------------------------------------------

MAX_TOOL_ROUNDS = 3  # calls a reply may make before its next turn has to be the answer


@dataclass(frozen=True)
class Exchange:
    """A reply written with tools at hand: the final completion, and the turns (calls, results) before it."""

    completion: Completion
    turns: list[dict]

    @property
    def calls(self) -> int:
        return sum(len(turn.get("tool_calls") or []) for turn in self.turns if turn["role"] == "assistant")

    @property
    def first_call(self) -> dict | None:
        """The first tool call as {"name", "arguments"}, or None when the reply called no tool."""
        turns = (turn for turn in self.turns if turn["role"] == "assistant")
        call = next((call["function"] for turn in turns for call in turn.get("tool_calls") or []), None)
        return {"name": call["name"], "arguments": call["arguments"]} if call else None

    @property
    def failures(self) -> int:
        return sum(failed(turn["content"]) for turn in self.turns if turn["role"] == "tool")


def tool_turns(tokenizer, text: str) -> list[dict]:
    """The turns a reply's tool calls add to the conversation: the assistant's calls, then each result; none when
    the reply calls no tool (it is an answer)."""
    if getattr(tokenizer, "response_template", None) is None:
        raise DataError("tools: the model's tokenizer has no response template to read tool calls with")
    message = tokenizer.parse_response(text, prefix="")
    calls = message.get("tool_calls") or []
    if not calls:
        return []
    results = [run_tool_call(call["function"]["name"], call["function"]["arguments"]) for call in calls]
    return [
        {"role": "assistant", "content": message.get("content") or "", "tool_calls": calls},
        *({"role": "tool", "content": result} for result in results),
    ]


def generate_with_tools(
    model,
    tokenizer,
    conversations: list,
    decoding: Decoding = Decoding(),
    batch_size: int = 32,
    progress: bool = False,
    stream=None,
) -> list[Exchange]:
    """Answer each conversation with the tools offered and run: every reply that calls a tool gets the result in
    a `tool` turn and writes again, up to MAX_TOOL_ROUNDS calls, so that its last turn is the answer. `stream`
    (one conversation) shows each turn as it is written and each result (`  | ...`) as it comes back."""
    if decoding.num_samples != 1:
        raise ValueError("num_samples: a conversation with tools is answered once")
    turns = [[] for _ in conversations]
    finals: list[Completion | None] = [None] * len(conversations)
    pending = list(range(len(conversations)))
    for rounds in range(MAX_TOOL_ROUNDS + 1):
        prompts = [list(conversations[index]) + turns[index] for index in pending]
        completions = generate(
            model, tokenizer, prompts, decoding, batch_size, progress=progress, stream=stream, tools=TOOLS
        )
        waiting = []
        for index, completion in zip(pending, completions, strict=True):
            added = tool_turns(tokenizer, completion.text) if rounds < MAX_TOOL_ROUNDS else []
            if added:
                turns[index] += added
                waiting.append(index)
                if stream is not None:
                    for result in added[1:]:
                        stream.write("".join(f"  | {line}\n" for line in result["content"].splitlines() or [""]))
            else:
                finals[index] = completion
        pending = waiting
        if not pending:
            break
    return [Exchange(final, turn) for final, turn in zip(finals, turns, strict=True)]


def sample_text(
    model_name_or_path: str,
    prompt: str,
    decoding: Decoding = SAMPLING,
    stream=None,
) -> list[str]:
    """Continue `prompt` `decoding.num_samples` times, the i-th sample drawn with seed `decoding.seed + i`, so
    that any one of them can be drawn again alone; write each to `stream` as it comes; return the texts."""
    model, tokenizer = load_model_and_tokenizer(model_name_or_path)
    texts = []
    for index in range(decoding.num_samples):
        one = replace(decoding, num_samples=1, seed=decoding.seed + index)
        if stream is not None:
            stream.write(prompt)
        texts.append(generate(model, tokenizer, [prompt], one, stream=stream)[0].text)
    return texts
