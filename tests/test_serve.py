"""`deepdive serve` as its users meet it: a real server process on the micro chat model, the official `openai`
client, raw HTTP for what a client library would not send, and the chat page in a real headless Chromium."""

import concurrent.futures
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import openai
import pytest
import torch
import yaml
from playwright.sync_api import sync_playwright

from deepdive.errors import DataError
from deepdive.generation import Decoding, generate
from deepdive.modeling import build_llama_config, build_model, load_model_and_tokenizer
from deepdive.serve import check_chat_model, check_port_free, checked_request
from deepdive.tasks import with_tools
from deepdive.tasks.common import conversation
from deepdive.tools import TOOL_SCHEMAS


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(process: subprocess.Popen, base: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read()}")
        try:
            urllib.request.urlopen(base + "/deepdive/info", timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the server did not come up")


@pytest.fixture(scope="module")
def tools_model(micro_sft, tmp_path_factory):
    """The micro chat model, recorded as fine-tuned with tools (its recipe sets `tool_share`)."""
    folder = tmp_path_factory.mktemp("serve") / "sft-tools"
    shutil.copytree(micro_sft, folder)
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    (folder / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "tool_share": 0.5}))
    return folder


def serving(model_dir):
    """A `deepdive serve` process on `model_dir`, as its address while it runs."""
    port = free_port()
    command = [sys.executable, "-m", "deepdive.cli", "serve", "--model", str(model_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, base)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tools_model):
    yield from serving(tools_model)


@pytest.fixture(scope="module")
def tool_caller(micro_sft, tmp_path_factory):
    """A small model that has learnt one tool conversation by heart: asked "What is 2 + 3?" with the tools
    offered, it calls python with "2 + 3", and with the result in its context it answers "Answer: 5"."""
    _, tokenizer = load_model_and_tokenizer(str(micro_sft))
    call = {"name": "python", "arguments": {"code": "2 + 3"}}
    example = with_tools(conversation("arithmetic", "What is 2 + 3?", "5", "5", call, "Answer: 5"))
    ids = tokenizer.apply_chat_template(example["messages"], tools=json.loads(TOOL_SCHEMAS), return_dict=True)
    ids = torch.tensor([ids["input_ids"]])
    config = build_llama_config(tokenizer, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    model = build_model(config, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.01
    folder = tmp_path_factory.mktemp("serve") / "tool-caller"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"tool_share": 1.0}))
    (folder / "metrics.json").write_text(json.dumps({"stage": "sft"}))
    return folder


@pytest.fixture(scope="module")
def tool_server(tool_caller):
    yield from serving(tool_caller)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="not needed", max_retries=0)


@pytest.fixture(scope="module")
def local(tools_model):
    return load_model_and_tokenizer(tools_model)


def ask(messages, n=12):
    return dict(model="deepdive", messages=messages, max_tokens=n, temperature=0)


def post(base: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(base + "/v1/chat/completions", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


def test_the_api_answers_as_deepdive_generates_streamed_or_not(client, local):
    model, tokenizer = local
    expected = generate(model, tokenizer, [QUESTION], Decoding(max_new_tokens=12))[0].text
    whole = client.chat.completions.create(**ask(QUESTION))
    assert whole.choices[0].message.content == expected
    assert whole.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(**ask(QUESTION), stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == expected
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")


def test_twenty_concurrent_streaming_clients_each_get_their_whole_reply(client, local):
    model, tokenizer = local
    questions = [[{"role": "user", "content": f"What is {n} + {n}?"}] for n in range(20)]
    expected = [completion.text for completion in generate(model, tokenizer, questions, Decoding(max_new_tokens=12))]

    def stream(messages):
        chunks = list(client.chat.completions.create(**ask(messages), stream=True))
        finish = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1]
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices), finish

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(stream, questions))
    assert [text for text, _ in replies] == expected
    assert all(finish in ("stop", "length") for _, finish in replies)


def test_the_reply_budget_is_cut_to_the_context_that_is_left(client, local):
    model, tokenizer = local
    context = model.config.max_position_embeddings
    long_question = [{"role": "user", "content": "count " * 8}]
    prompt = len(
        tokenizer.apply_chat_template(long_question, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
    reply = client.chat.completions.create(**ask(long_question, n=4 * context))
    assert reply.usage.prompt_tokens == prompt
    assert prompt < context and reply.usage.completion_tokens <= context - prompt


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "the request body is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"messages": []}).encode(), "messages: give a non-empty list"),
        (json.dumps({"messages": [{"role": "user", "content": "  "}]}).encode(), "the last message is empty"),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), "needs a role, one of system"),
        (json.dumps({"messages": QUESTION, "max_tokens": 0}).encode(), "max_tokens: 0 is not a whole number"),
        (
            json.dumps({"messages": [{"role": "user", "content": "word " * 400}]}).encode(),
            "this model reads at most 64",
        ),
    ],
)
def test_a_bad_request_gets_a_400_saying_what_is_wrong_and_the_server_stays_up(server, client, body, message):
    status, error = post(server, body)
    assert status == 400 and message in error["error"]["message"]
    assert client.chat.completions.create(**ask(QUESTION, n=2)).choices[0].message.content is not None


def test_the_openai_client_raises_the_servers_words_for_a_conversation_too_long(client):
    with pytest.raises(openai.BadRequestError, match="drop earlier turns"):
        client.chat.completions.create(**ask([{"role": "user", "content": "word " * 400}]))


def test_a_client_that_leaves_mid_stream_does_not_take_the_server_down(server, client):
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"messages": QUESTION, "stream": True, "max_tokens": 40})
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.sock.close()
    for _ in range(3):
        assert client.chat.completions.create(**ask(QUESTION, n=4)).choices[0].message.content is not None


def test_a_model_trained_with_tools_offers_them_and_the_pages_tool_route_runs_them(server):
    info = json.loads(urllib.request.urlopen(server + "/deepdive/info").read())
    assert [tool["function"]["name"] for tool in info["tools"]] == ["python", "search"]
    assert info["stage"] == "sft" and info["name"] == "sft-tools" and info["context"] == 64
    request = urllib.request.Request(
        server + "/deepdive/tool",
        json.dumps({"name": "python", "arguments": {"code": "'strawberry'.count('r')"}}).encode(),
        {"Content-Type": "application/json"},
    )
    result = json.loads(urllib.request.urlopen(request).read())["content"]
    assert result == "3"


def test_a_tool_call_sent_back_in_the_apis_shape_is_rendered_by_the_chat_template(local):
    _, tokenizer = local
    call = {"id": "call-1", "type": "function", "function": {"name": "python", "arguments": '{"code": "2 + 3"}'}}
    conversation = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "5", "tool_call_id": "call-1"},
    ]
    request = json.loads(checked_request(json.dumps({"messages": conversation}).encode(), tokenizer, 1000, "m"))
    rendered = tokenizer.apply_chat_template(
        [
            conversation[0],
            {
                **conversation[1],
                "tool_calls": [{**call, "function": {**call["function"], "arguments": {"code": "2 + 3"}}}],
            },
            conversation[2],
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert '<tool>python {"code": "2 + 3"}</tool>' in rendered
    assert request["max_tokens"] == 1000 - len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert request["model"] == "m"


def test_a_folder_that_cannot_be_served_and_a_port_in_use_are_one_line_errors(tmp_path, micro_base, micro_sft):
    with pytest.raises(DataError, match="is not a model folder"):
        check_chat_model(tmp_path / "nothing-here")
    with pytest.raises(DataError, match="has no chat template; serve an SFT or GRPO model"):
        check_chat_model(micro_base)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DataError, match=f"--port: cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
        command = [sys.executable, "-m", "deepdive.cli", "serve", "--model", str(micro_sft), "--port", str(port)]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0 and finished.stderr.strip().splitlines()[-1].startswith("error: --port:")


# --- The chat page, in a real browser -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module: Playwright's sync API allows one running instance at a time."""
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(server, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone's screen
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('sft')")
    yield page
    page.close()


def sent_bodies(page) -> list:
    """The chat requests the page sends from now on, as parsed JSON."""
    bodies = []
    page.on("request", lambda request: "/v1/chat/completions" in request.url and bodies.append(request.post_data_json))
    return bodies


def send(page, text: str) -> None:
    page.fill("#message", text)
    page.press("#message", "Enter")
    page.wait_for_function("!document.getElementById('send').disabled", timeout=60_000)


def test_the_chat_page_streams_a_reply_keeps_the_conversation_and_resets(page):
    assert "sft-tools · sft · context 64 tokens" in page.text_content("#model")
    bodies = sent_bodies(page)
    page.evaluate(
        """() => { window.updates = 0; new MutationObserver(() => window.updates++)
            .observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); }"""
    )
    page.uncheck("#tools")
    send(page, "Who are you?")
    turns = page.query_selector_all(".turn")
    assert [turn.get_attribute("class") for turn in turns] == ["turn user", "turn assistant"]
    assert turns[1].text_content().strip() and page.evaluate("window.updates") > 3  # arrived in pieces
    first_reply = turns[1].text_content()
    asked = len(bodies)
    send(page, "What is 2 + 2?")
    follow_up = bodies[asked]["messages"]  # what the page sent first: the whole conversation
    assert [(message["role"], message["content"]) for message in follow_up] == [
        ("user", "Who are you?"),
        ("assistant", first_reply),
        ("user", "What is 2 + 2?"),
    ]
    assert "tools" not in bodies[asked]
    page.click("#reset")
    assert page.query_selector_all(".turn") == []
    page.check("#tools")
    send(page, "And 3 + 3?")
    assert [message["content"] for message in bodies[-1]["messages"]] == ["And 3 + 3?"]
    assert [tool["function"]["name"] for tool in bodies[-1]["tools"]] == ["python", "search"]


def test_the_chat_page_fits_a_phone_and_drops_old_turns_when_the_context_is_full(page):
    page.click("#reset")
    page.uncheck("#tools")  # the tools' list alone nearly fills the micro model's 64 tokens
    bodies = sent_bodies(page)
    for question in ["Who are you?", "Tell me about Shakespeare and his plays, please", "What is 7 + 8?"]:
        send(page, question)
    assert [error.text_content() for error in page.query_selector_all(".error")] == []
    assert len(bodies) > 3  # the 64-token context cannot hold three exchanges: the page dropped old ones, asked again
    assert bodies[-1]["messages"][-1]["content"] == "What is 7 + 8?" and len(bodies[-1]["messages"]) < 5
    assert len(page.query_selector_all(".turn")) == 6  # the page still shows the whole conversation
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1]
    box = page.query_selector("#send").bounding_box()
    assert box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844


# --- Tools through the API and the page: a model that calls one -------------------------------------------------


def test_a_tool_call_comes_back_as_tool_calls_and_its_result_gets_the_answer(tool_server):
    client = openai.OpenAI(base_url=tool_server + "/v1", api_key="not needed", max_retries=0)
    tools = json.loads(TOOL_SCHEMAS)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    first = client.chat.completions.create(model="deepdive", messages=messages, tools=tools, temperature=0)
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "python" and json.loads(call.function.arguments) == {"code": "2 + 3"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "5", "tool_call_id": call.id},
    ]
    answer = client.chat.completions.create(model="deepdive", messages=messages, tools=tools, temperature=0)
    assert answer.choices[0].message.content == "Answer: 5"


def test_the_chat_page_runs_the_call_shows_it_and_answers_from_its_result(tool_server, browser):
    page = browser.new_page()
    page.goto(tool_server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('tool-caller')")
    assert page.is_checked("#tools")
    send(page, "What is 2 + 3?")
    turns = [(turn.get_attribute("class"), turn.text_content()) for turn in page.query_selector_all(".turn")]
    page.close()
    assert turns == [
        ("turn user", "What is 2 + 3?"),
        ("turn tool", 'python({"code":"2 + 3"})\n→ 5'),
        ("turn assistant", "Answer: 5"),
    ]
