"""The README's picture of the chat page: serve a chat model, ask it questions in headless Chromium on a
phone-sized screen, and save what the page shows.

    .venv/bin/python scripts/chat_page_screenshot.py --model runs/tiny/sft-tools --output docs/chat-page.png
"""

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright


QUESTIONS = ["Who are you?", "How many r's are in 'strawberry'?", "Which play is Hamlet in?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="chat model folder")
    parser.add_argument("--output", default="docs/chat-page.png")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--questions", nargs="+", default=QUESTIONS)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or sys.exit("error: no chromium on PATH (apt-get install chromium)")
    command = [sys.executable, "-m", "deepdive.cli", "serve", "--model", args.model, "--port", str(args.port)]
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/deepdive/info", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit("error: the server exited")
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('model').textContent !== 'loading…'")
            for question in args.questions:
                page.fill("#message", question)
                page.press("#message", "Enter")
                page.wait_for_function("!document.getElementById('send').disabled", timeout=120_000)
            page.screenshot(path=args.output)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    print(f"screenshot written to {args.output}")


if __name__ == "__main__":
    main()
