"""A reward server in the standard library: POST {prompts, completions, fields} -> {"rewards": [...], parts}.

    python reward_server.py --port 8000      then  rewards.components=[{url: "http://127.0.0.1:8000/score"}]
It serves my_rewards.score; put any scorer (a judge model, a sandbox, a service) behind the same few lines.
"""
import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from my_rewards import score


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps(score(batch["completions"], prompts=batch["prompts"], **batch["fields"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    port = p.parse_args().port
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"scoring at http://127.0.0.1:{server.server_port}/score", flush=True)
    server.serve_forever()
