"""`deepdive serve`: a chat model behind an OpenAI-compatible API and a chat page, on this machine.

transformers' own server (`transformers serve`) does the serving: `/v1/chat/completions`, streamed or not,
tool calls read with the tokenizer's response schema, requests queued for one pinned model. It serves a local
folder well; what it lacks for a small model is added here, in front of it. Each request is checked before it
reaches the model: a conversation longer than the model's context (256 tokens for the tiny recipe) is a 400
that says so, where transformers would let the model write past what it was trained to read; an empty list,
an empty last message or a malformed body is a 400 with one line naming the field, not a 500; and the reply's
token budget is cut to the context that is left. The `model` field may be anything: the server has one model.
Beside the API: the chat page at `/`, the model's name, stage and tools at `/deepdive/info`, and
`/deepdive/tool`, which runs one call of the python or search tool for the page.
"""

import json
import logging
import socket
from importlib.resources import files
from pathlib import Path

import uvicorn
from fastapi.responses import HTMLResponse, JSONResponse
from transformers import AutoConfig, AutoTokenizer
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.completion import CompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.response import ResponseHandler
from transformers.cli.serving.server import build_server
from transformers.cli.serving.systemone import SystemOneHandler
from transformers.cli.serving.transcription import TranscriptionHandler
from transformers.cli.serving.utils import GenerationState

from deepdive.errors import DataError
from deepdive.modeling import check_model_folder
from deepdive.records import read_record, trained_with_tools
from deepdive.tokenizer import ROLES
from deepdive.tools import TOOL_SCHEMAS, run_tool_call


CHAT_ROUTE = "/v1/chat/completions"
MAX_BODY_BYTES = 1_000_000  # a request for a model with a context of a few hundred tokens is a few kilobytes


class RequestError(ValueError):
    """Why a chat request is refused: one line, and the request field it is about (OpenAI's `param`)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def check_chat_model(model_dir: str | Path) -> Path:
    """The folder of a chat model, or a one-line DataError saying why it cannot be served."""
    folder = check_model_folder(model_dir)
    if (folder / "adapter_config.json").is_file():
        raise DataError(
            f"--model: {folder} is a LoRA adapter; merge it first (deepdive merge --adapter {folder} --output_dir "
            f"{folder}-merged) and serve the merged folder"
        )
    settings = folder / "tokenizer_config.json"
    in_settings = settings.is_file() and json.loads(settings.read_text(encoding="utf-8")).get("chat_template")
    if not (in_settings or (folder / "chat_template.jinja").is_file()):
        raise DataError(f"--model: {folder} has no chat template; serve an SFT or GRPO model, not a base model")
    return folder


def check_port_free(host: str, port: int) -> None:
    """A one-line DataError when `port` cannot be listened on, before the model is loaded."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise DataError(
                f"--port: cannot listen on {host}:{port} ({error.strerror}); choose another --port"
            ) from None


def model_info(folder: Path, model_id: str, context: int) -> dict:
    """What the chat page shows and needs: the model's name and stage, its context and whether it has tools."""
    stage = read_record(folder, "metrics.json").get("stage") or "chat model"
    with_tools = trained_with_tools(folder)
    return {
        "model": model_id,
        "name": folder.resolve().name,
        "stage": stage,
        "context": context,
        "tools": json.loads(TOOL_SCHEMAS) if with_tools else [],
    }


def checked_request(body: bytes, tokenizer, context: int, model_id: str) -> bytes:
    """The chat request `body` as the model will answer it (the pinned model, a token budget that fits the
    context), or a RequestError saying what is wrong with it."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RequestError(f"the request body is not JSON ({error})") from None
    if not isinstance(request, dict):
        raise RequestError("the request body must be a JSON object with a 'messages' list")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: give a non-empty list of {role, content} messages", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"messages[{index}]: a message needs a role, one of {', '.join(ROLES)}", "messages")
        content = message.get("content")
        if not (isinstance(content, str) or (content is None and message.get("tool_calls"))):
            raise RequestError(f"messages[{index}]: 'content' must be text", "messages")
    if not (messages[-1].get("content") or "").strip():
        raise RequestError("messages: the last message is empty; write something to answer", "messages")
    tools = request.get("tools")
    try:
        prompt = tokenizer.apply_chat_template(
            [readable(message) for message in messages],
            tools=[tool.get("function", tool) for tool in tools] if tools else None,
            add_generation_prompt=True,
            return_dict=True,
        )["input_ids"]
    except Exception as error:  # the template's own words: a tool call it cannot render, a role out of order
        raise RequestError(f"messages: the chat template cannot render them ({error})", "messages") from None
    room = context - len(prompt)
    if room < 1:
        raise RequestError(
            f"messages: the conversation is {len(prompt)} tokens and this model reads at most {context}; "
            "drop earlier turns or start a new conversation",
            "messages",
        )
    asked = request.pop("max_completion_tokens", None) or request.get("max_tokens")
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise RequestError(f"max_tokens: {asked!r} is not a whole number of tokens >= 1", "max_tokens")
    request["max_tokens"] = min(asked or room, room)
    request["model"] = model_id
    return json.dumps(request).encode()


def readable(message: dict) -> dict:
    """A message as the chat template reads it: a tool call's arguments as a dict (the API sends JSON text)."""
    calls = message.get("tool_calls")
    if not calls:
        return {**message, "content": message.get("content") or ""}
    parsed = []
    for call in calls:
        function = dict(call.get("function") or {})
        if isinstance(function.get("arguments"), str):
            function["arguments"] = json.loads(function["arguments"] or "{}")
        parsed.append({**call, "function": function})
    return {**message, "content": message.get("content") or "", "tool_calls": parsed}


class CheckedChat:
    """ASGI middleware: reads a chat request whole, refuses it with a 400 or hands on the checked body.

    The rest of the connection (a client that goes away mid-stream) still reaches the server, so a reply to a
    closed connection stops there and the server goes on serving the others.
    """

    def __init__(self, app, tokenizer, context: int, model_id: str):
        self.app, self.tokenizer, self.context, self.model_id = app, tokenizer, context, model_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_ROUTE:
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return await send_error(send, 413, f"the request is over {MAX_BODY_BYTES:,} bytes", None)
            if not message.get("more_body"):
                break
        try:
            body = checked_request(body, self.tokenizer, self.context, self.model_id)
        except RequestError as error:
            return await send_error(send, 400, str(error), error.param)
        handed_on = False

        async def receive_checked():
            nonlocal handed_on
            if handed_on:
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(name, value) for name, value in scope["headers"] if name != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, receive_checked, send)


async def send_error(send, status: int, message: str, param: str | None) -> None:
    """An error in OpenAI's shape, so the `openai` client raises it with our message."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    payload = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def build_app(model_dir: str | Path):
    """The served app: transformers' server pinned to the model in `model_dir`, behind `CheckedChat`, with the
    chat page and deepdive's two routes added."""
    folder = check_chat_model(model_dir)
    model_id = str(folder)
    context = AutoConfig.from_pretrained(folder).max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(folder)
    models = ModelManager(force_model=model_id)  # loads the model now, keeps it loaded
    generation = GenerationState()
    app = build_server(
        models,
        ChatCompletionHandler(model_manager=models, generation_state=generation, chat_template_kwargs={}),
        completion_handler=CompletionHandler(model_manager=models, generation_state=generation),
        response_handler=ResponseHandler(model_manager=models, generation_state=generation, chat_template_kwargs={}),
        transcription_handler=TranscriptionHandler(models, generation),
        systemone_handler=SystemOneHandler(
            model_manager=models, generation_state=generation, chat_template_kwargs={}, decision_config=None
        ),
        generation_state=generation,
    )
    info = model_info(folder, model_id, context)
    page = files("deepdive").joinpath("chat_page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def chat_page():
        return page

    @app.get("/deepdive/info")
    def deepdive_info():
        return info

    @app.post("/deepdive/tool")
    def deepdive_tool(call: dict):
        if not info["tools"]:
            return JSONResponse({"error": {"message": "this model was not trained with tools"}}, status_code=400)
        return {"content": run_tool_call(call.get("name"), call.get("arguments"))}

    app.add_middleware(CheckedChat, tokenizer=tokenizer, context=context, model_id=model_id)
    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the chat model in `model_dir` on `host:port` until interrupted."""
    logging.getLogger("transformers.cli.serving").setLevel(logging.ERROR)  # not a line per request
    check_chat_model(model_dir)
    check_port_free(host, port)
    app = build_app(model_dir)
    print(f"deepdive: chat page http://{host}:{port}/ , OpenAI API http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
