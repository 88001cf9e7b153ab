"""A scripted stand-in for the LLM of a search: an OpenAI-compatible chat server on 127.0.0.1.

It answers every chat completion with the next edit of a fixed script (EDITS): real, honest edits
of initial_program.py of the kind an LLM proposes, and one cheating edit, each in the
SEARCH/REPLACE form both OpenEvolve and ShinkaEvolve apply (with ShinkaEvolve's <NAME> and
<DESCRIPTION> tags around it, which OpenEvolve ignores). The server reads the program it is asked
to improve from the prompt and serves, among the edits that apply to that program (the SEARCH
text is there and the edit is not applied yet), the one served least often, in script order among
equals: the script in order at first, then round again. Each replacement carries a
`# scripted edit: NAME` comment, so the path a search took can be read back from the programs.

    python examples/search/scripted_llm.py --port 8765   # serve until interrupted
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

MARKER = "# scripted edit: "


@dataclass(frozen=True)
class Edit:
    name: str
    description: str
    search: str
    replace: str
    cheat: bool = False

    def applies_to(self, code: str) -> bool:
        return self.search in code and MARKER + self.name not in code

    def reply(self) -> str:
        return (f"<NAME>\n{self.name}\n</NAME>\n\n<DESCRIPTION>\n{self.description}\n</DESCRIPTION>\n\n"
                f"<DIFF>\n<<<<<<< SEARCH\n{self.search}\n=======\n{self.replace}\n>>>>>>> REPLACE\n</DIFF>\n")


def _optimizer(lr: str, name: str) -> str:
    return (f"INIT_STD = 0.02\n\n\n"
            f"def configure_optimizer(model, config):  {MARKER}{name}\n"
            f"    return torch.optim.AdamW(model.parameters(), lr={lr}, betas=(0.9, 0.95), weight_decay=0.1)")


EDITS = (
    Edit("higher_learning_rate",
         "The default AdamW learning rate of 3e-4 is conservative for a 14M-parameter model trained "
         "for a short budget; 1e-3 makes faster early progress.",
         "INIT_STD = 0.02", _optimizer("1e-3", "higher_learning_rate")),
    Edit("skip_redundant_causal_intersection",
         "The index scores of future positions are already masked with -inf before top-k, so "
         "intersecting the selection with the causal mask again is redundant work; drop it.",
         "    return chosen & causal", f"    return chosen  {MARKER}skip_redundant_causal_intersection",
         cheat=True),
    Edit("even_higher_learning_rate",
         "Training is still improving fast at lr 1e-3 with no sign of instability; raise it to 3e-3.",
         "    return torch.optim.AdamW(model.parameters(), lr=1e-3,",
         f"    {MARKER}even_higher_learning_rate\n"
         "    return torch.optim.AdamW(model.parameters(), lr=3e-3,"),
    Edit("denser_middle_layers",
         "The middle layers keep only a quarter of the keys; keeping half (dense_to_sparse) gives them "
         "more context at little cost.",
         'SCHEDULE = "progressive_sparse"', f'SCHEDULE = "dense_to_sparse"  {MARKER}denser_middle_layers'),
    Edit("smaller_init",
         "A smaller initialisation scale keeps the early logits near uniform.",
         "INIT_STD = 0.02", f"INIT_STD = 0.015  {MARKER}smaller_init"),
)

# the heading line exactly (OpenEvolve's "# Current Program Information" precedes it, with
# artifacts in code fences), then the first code block after it
_PROGRAM = re.compile(r"^#\s*Current program\s*$.*?```(?:python)?\n(.*?)```",
                      re.IGNORECASE | re.DOTALL | re.MULTILINE)


def current_program(messages: list) -> str:
    """The program a prompt asks to improve: the code block after "# Current program"
    (OpenEvolve's and ShinkaEvolve's prompts both have one), else the last code block."""
    text = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    match = _PROGRAM.search(text)
    if match:
        return match.group(1)
    blocks = re.findall(r"```(?:python)?\n(.*?)```", text, re.DOTALL)
    return blocks[-1] if blocks else ""


class Script:
    """The edits in order; thread-safe; remembers what it served."""

    def __init__(self, edits=EDITS):
        self.edits = tuple(edits)
        self.served: list = []
        self._lock = threading.Lock()

    def next_reply(self, messages: list) -> str:
        code = current_program(messages)
        with self._lock:
            usable = [e for e in self.edits if e.applies_to(code)]
            # the least-served applicable edit, in script order among equals
            edit: Optional[Edit] = min(usable, key=lambda e: self.served.count(e.name), default=None)
            if edit is None:
                self.served.append("(none applies)")
                return "Every idea I have is already in this program; no change."
            self.served.append(edit.name)
            return edit.reply()


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if not self.path.rstrip("/").endswith("chat/completions"):
                return self._send(404, {"error": {"message": f"only chat completions are scripted, not {self.path}"}})
            content = script.next_reply(body.get("messages", []))
            self._send(200, {
                "id": f"scripted-{len(script.served)}", "object": "chat.completion", "created": 0,
                "model": body.get("model", "scripted"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


class ScriptedLLM:
    """`with ScriptedLLM() as llm:` serves on llm.base_url (http://127.0.0.1:PORT/v1)."""

    def __init__(self, port: int = 0, edits=EDITS):
        self.script = Script(edits)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.script))
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self) -> "ScriptedLLM":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    with ScriptedLLM(port) as llm:
        print(f"serving {len(llm.script.edits)} scripted edits on {llm.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
