"""A reward server as a reward component: `{url: "http://127.0.0.1:8000/score"}` (OpenRLHF's `--remote_rm_url`).

Each batch is one POST of JSON

    {"prompts": [...], "completions": [...], "completion_ids": [[...], ...], "fields": {"<column>": [...], ...},
     "query": [...], "labels": [...]}

(`query` and `labels` are what OpenRLHF's remote_rm_fn posts: prompt text + completion, the row's `label` column,
so a server written for OpenRLHF answers unchanged), and the answer is a JSON list of scores (numbers, or null for a sample it does not score), or an object
`{"rewards": [...], "<part>": [...]}` as a user function's dict (rewards/user.py; `scores` is read as `rewards`
too, OpenRLHF's name). A call has `timeout_s` seconds; a refused connection, a timeout, HTTP 429 or 5xx is tried
again up to `retries` times (0.5 s, 1 s, 2 s ... apart); any other HTTP error fails at once with the server's words.
Only the standard library: reward actors need nothing more to call a server.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

from rewards.user import RESULT_KEY, UserRewardError

RETRIED_STATUS = (429, 500, 502, 503, 504)


def check_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; ValueError naming the fix otherwise."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"reward url {url!r}: write http://host:port/path (or https://...)")
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def reachable(url: str, timeout_s: float = 5.0) -> str | None:
    """None when something listens at the URL's host and port, else why not (for the check before actors)."""
    host, port = check_url(url)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def post_batch(url: str, body: Mapping[str, Any], timeout_s: float, retries: int,
               headers: Mapping[str, str] | None = None) -> Any:
    """The server's decoded JSON answer to `body`, with bounded retries; UserRewardError (kind 'died' when it never
    answered, 'raised' when it refused the batch, 'result' when the answer is not JSON)."""
    data = json.dumps(body, ensure_ascii=False, default=str).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
        req = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            text = err.read()[:300].decode(errors="replace")
            if err.code in RETRIED_STATUS:
                last = f"HTTP {err.code}: {text}"
                continue
            raise UserRewardError(f"reward server {url} refused the batch: HTTP {err.code}: {text}", "raised") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            last = f"{type(reason).__name__}: {reason}"
            continue
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise UserRewardError(f"reward server {url} answered with something that is not JSON: {raw[:200]!r}; "
                                  f"answer a JSON list of scores or {{\"{RESULT_KEY}\": [...]}}", "result") from None
    if last.startswith("HTTP "):  # it answered, with an error each time: its own failure, not an absent server
        raise UserRewardError(f"reward server {url} answered with an error {retries + 1} times (last: {last}); see the "
                              "server's own log for why it fails on this batch (params.retries)", "raised")
    kind = "timeout" if "timed out" in last or "Timeout" in last else "died"
    raise UserRewardError(f"reward server {url} did not answer after {retries + 1} tries within {timeout_s:g} s each "
                          f"(last: {last}); is it running at that url? (params.retries, rewards.timeout_s)", kind)


def as_result(answer: Any) -> Any:
    """The server's answer in a user function's result form: OpenRLHF's `scores` read as `rewards` where there is no
    `rewards`, and the lists of its `extra_logs` as parts."""
    if not isinstance(answer, dict):
        return answer
    out: dict[str, Any] = {}
    for key, value in answer.items():
        if key == "extra_logs" and isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    if RESULT_KEY not in out and "scores" in out:
        out[RESULT_KEY] = out.pop("scores")
    return out
