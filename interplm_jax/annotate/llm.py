"""Claude requests through the ``anthropic`` SDK: cache, bounded concurrency, retries, dry runs.

* The key is read only from ``ANTHROPIC_API_KEY`` and handed to the SDK; it is part of no
  request body, cache entry, prompt file, estimate or log message this module writes.
* Retries with exponential backoff on 408/409/429/5xx, connection errors and time-outs are the
  SDK's own (``max_retries``; it honours ``retry-after``/``retry-after-ms`` headers).
* The on-disk cache is keyed by the SHA-256 of the request body (model, max_tokens,
  system, messages). An answer is cached only once it parsed, so a rerun pays
  nothing twice for good answers and asks again where the last answer was unusable.
* An HTTP 200 that is no message (bad JSON, an HTML page, no ``usage``, ``content: null``) is
  retried here like a server error (``max_retries`` times, with backoff).
* A request whose answer cannot be parsed, or that fails past its retries, becomes a failed
  :class:`Outcome`; the run goes on. Failures that would hit every request (bad key,
  no permission, unknown model) stop the run with an :class:`~interplm_jax.errors.InputError`.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from interplm_jax.annotate.config import LLMConfig
from interplm_jax.atomic import atomic_write
from interplm_jax.errors import InputError, InterPLMError
from interplm_jax.progress import progress_bar

log = logging.getLogger(__name__)

API_KEY_ENV = "ANTHROPIC_API_KEY"


class ParseError(InterPLMError):
    """Claude's answer does not follow the requested format."""


class MalformedAnswer(InterPLMError):
    """An HTTP 200 whose body is not a Messages API message (no content list, no usage)."""


def _answer(msg) -> tuple[str, int, int]:
    """(text, input tokens, output tokens) of a message, or :class:`MalformedAnswer`."""
    if not hasattr(msg, "content"):  # the SDK hands back a non-JSON body as it came
        raise MalformedAnswer(f"not a message: {_short(str(msg), 80)!r}")
    if not isinstance(msg.content, list):
        raise MalformedAnswer(f"content is {type(msg.content).__name__}, not a list of blocks")
    usage = getattr(msg, "usage", None)
    n_in, n_out = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    if not (isinstance(n_in, int) and isinstance(n_out, int)):
        raise MalformedAnswer("no token usage")
    texts = [getattr(b, "text", None) for b in msg.content if getattr(b, "type", "") == "text"]
    if not all(isinstance(t, str) for t in texts):
        raise MalformedAnswer("a text block without text")
    return "".join(texts), n_in, n_out


@dataclasses.dataclass(frozen=True)
class Request:
    """One Messages API call. ``label`` names it in outputs and is not part of the cache key."""

    label: str
    system: str
    prompt: str
    max_tokens: int


class Outcome(NamedTuple):
    """The result of one request: ``value`` is the parsed answer when ``ok``."""

    label: str
    ok: bool
    value: Any
    text: str
    error: str
    cached: bool
    input_tokens: int
    output_tokens: int


def make_client(cfg: LLMConfig):
    """An ``anthropic.Anthropic`` client with the key from ``ANTHROPIC_API_KEY`` only."""
    import anthropic

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise InputError(f"{API_KEY_ENV} is not set: export your Anthropic API key, or use "
                         "--dry-run to write the prompts and a cost estimate without calling")
    return anthropic.Anthropic(api_key=key, base_url=cfg.base_url, max_retries=cfg.max_retries,
                               timeout=cfg.timeout_s)


class LLM:
    """Runs batches of :class:`Request` against Claude with a cache under ``cache_dir``.

    ``client`` is an ``anthropic.Anthropic`` (built from the environment on first use when
    None). Totals of the calls made are in ``self.usage``.
    """

    def __init__(self, cfg: LLMConfig, cache_dir: str | Path | None, client=None):
        self.cfg = cfg
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._client = client
        self._lock = threading.Lock()
        self.usage = {"requests": 0, "cached": 0, "failed": 0, "input_tokens": 0,
                      "output_tokens": 0}
        self.failures: list[dict[str, str]] = []  # label, error, answer text of failed requests

    # -- requests and the cache -------------------------------------------------------------
    def body(self, req: Request) -> dict[str, Any]:
        """The Messages API request body (also what the cache key hashes)."""
        return {"model": self.cfg.model, "max_tokens": req.max_tokens, "system": req.system,
                "messages": [{"role": "user", "content": req.prompt}]}

    def cache_key(self, req: Request) -> str:
        blob = json.dumps(self.body(req), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def cached_text(self, req: Request) -> str | None:
        path = self._cache_path(self.cache_key(req))
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["response"]["text"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable cache entry %s", path)
            return None

    def _store(self, req: Request, text: str, meta: dict[str, Any]) -> None:
        path = self._cache_path(self.cache_key(req))
        if path is not None:
            entry = {"request": self.body(req), "response": {"text": text, **meta}}
            atomic_write(path, json.dumps(entry, indent=1))

    # -- calling ----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.cfg)
        return self._client

    def _call(self, req: Request, parse: Callable[[str], Any]) -> Outcome:
        import anthropic

        for attempt in range(1 + self.cfg.max_retries):
            try:
                msg = self.client.messages.create(**self.body(req))
                text, n_in, n_out = _answer(msg)
                break
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as e:
                raise InputError(f"the Anthropic API refused the key in {API_KEY_ENV} "
                                 f"(HTTP {e.status_code})") from None
            except anthropic.NotFoundError as e:
                raise InputError(f"the Anthropic API does not know model {self.cfg.model!r} "
                                 f"(HTTP {e.status_code}); set annotate.llm.model") from None
            except anthropic.APIStatusError as e:
                return self._failed(req, f"HTTP {e.status_code}{self._retries(e)}: "
                                         f"{_short(e.message)}")
            except (anthropic.APITimeoutError, anthropic.APIConnectionError) as e:
                return self._failed(req, f"{type(e).__name__} after {self.cfg.max_retries} retries")
            except (json.JSONDecodeError, anthropic.APIResponseValidationError, MalformedAnswer) as e:
                # An HTTP 200 the SDK does not retry (a proxy's HTML page, a cut body): we do.
                why = f"malformed answer (HTTP 200): {_short(str(e), 120)}"
                if attempt == self.cfg.max_retries:
                    return self._failed(req, f"{why}, after {self.cfg.max_retries} retries")
                log.info("%s: %s; asking again", req.label, why)
                time.sleep(min(0.25 * 2 ** attempt, 8.0))
        with self._lock:
            self.usage["requests"] += 1
            self.usage["input_tokens"] += n_in
            self.usage["output_tokens"] += n_out
        try:
            value = parse(text)
        except ParseError as e:
            why = f"unparseable answer: {e}"
            if msg.stop_reason == "max_tokens":
                why += f" (answer cut at max_tokens={req.max_tokens})"
            return self._failed(req, why, text, n_in, n_out)
        self._store(req, text, {"id": msg.id, "model": msg.model, "stop_reason": msg.stop_reason,
                                "input_tokens": n_in, "output_tokens": n_out})
        return Outcome(req.label, True, value, text, "", False, n_in, n_out)

    def _retries(self, e) -> str:
        """How an HTTP error was retried, as the SDK does it: 408, 409, 429 and 5xx (or what
        the ``x-should-retry`` header says) ``max_retries`` times, others not at all."""
        hint = e.response.headers.get("x-should-retry")
        retried = hint == "true" if hint in ("true", "false") else (
            e.status_code in (408, 409, 429) or e.status_code >= 500)
        return f" after {self.cfg.max_retries} retries" if retried else " (not retried)"

    def _failed(self, req: Request, why: str, text: str = "", n_in: int = 0,
                n_out: int = 0) -> Outcome:
        log.warning("%s failed: %s", req.label, why)
        with self._lock:
            self.usage["failed"] += 1
            self.failures.append({"label": req.label, "error": why, "text": text})
        return Outcome(req.label, False, None, text, why, False, n_in, n_out)

    def run(self, requests: Sequence[Request],
            parse: Callable[[str], Any] | Sequence[Callable[[str], Any]],
            desc: str = "Claude requests") -> list[Outcome]:
        """Answer every request (cache first, then the API with bounded concurrency), in order.

        ``parse`` turns an answer's text into its value or raises :class:`ParseError`; one
        callable for all requests, or one per request.
        """
        parsers = list(parse) if isinstance(parse, Sequence) else [parse] * len(requests)
        if len(parsers) != len(requests):
            raise ValueError(f"{len(parsers)} parsers for {len(requests)} requests")
        outcomes: list[Outcome | None] = [None] * len(requests)
        todo = []
        for i, req in enumerate(requests):
            text = self.cached_text(req)
            if text is not None:
                try:
                    value = parsers[i](text)
                    outcomes[i] = Outcome(req.label, True, value, text, "", True, 0, 0)
                    self.usage["cached"] += 1
                    continue
                except ParseError:
                    log.warning("%s: cached answer no longer parses; asking again", req.label)
            todo.append(i)
        if todo:
            log.info("%s: %d cached, %d to request from %s (%d at a time)", desc,
                     len(requests) - len(todo), len(todo), self.cfg.model, self.cfg.concurrency)
            _ = self.client  # fail early on a missing key
            with cf.ThreadPoolExecutor(self.cfg.concurrency) as pool, \
                    progress_bar(total=len(todo), desc=desc, unit="req") as bar:
                futures = {pool.submit(self._call, requests[i], parsers[i]): i for i in todo}
                try:
                    for fut in cf.as_completed(futures):
                        outcomes[futures[fut]] = fut.result()
                        bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        return outcomes  # type: ignore[return-value]

    # -- dry run ----------------------------------------------------------------------------
    def estimate(self, requests: Sequence[Request]) -> dict[str, Any]:
        """Token and cost estimate of the requests not yet cached (output at its upper bound)."""
        todo = [r for r in requests if self.cached_text(r) is None]
        n_in = sum(math.ceil((len(r.system) + len(r.prompt)) / self.cfg.chars_per_token)
                   for r in todo)
        n_out = sum(r.max_tokens for r in todo)
        cost_in = n_in * self.cfg.price_input_per_mtok / 1e6
        cost_out = n_out * self.cfg.price_output_per_mtok / 1e6
        return {"model": self.cfg.model, "requests": len(requests),
                "cached": len(requests) - len(todo), "to_request": len(todo),
                "input_tokens_estimate": n_in, "output_tokens_max": n_out,
                "cost_usd_input_estimate": round(cost_in, 4),
                "cost_usd_max": round(cost_in + cost_out, 4),
                "assumptions": f"{self.cfg.chars_per_token} characters per input token; output "
                               "at max_tokens; prices per million tokens: "
                               f"{self.cfg.price_input_per_mtok} in, "
                               f"{self.cfg.price_output_per_mtok} out (USD)"}


def write_dry_run(llm: LLM, requests: Sequence[Request], out_dir: str | Path,
                  name: str) -> dict[str, Any]:
    """Write each prompt to ``out_dir/prompts/<label>.txt`` and the estimate to
    ``out_dir/estimate_<name>.json``; return the estimate."""
    out_dir = Path(out_dir)
    for req in requests:
        atomic_write(out_dir / "prompts" / f"{req.label}.txt",
                     f"=== system ===\n{req.system}\n=== user ===\n{req.prompt}\n")
    est = llm.estimate(requests)
    atomic_write(out_dir / f"estimate_{name}.json", json.dumps(est, indent=2))
    log.info("dry run (%s): %d prompts in %s; ~%d input tokens, at most $%.2f", name,
             len(requests), out_dir / "prompts", est["input_tokens_estimate"], est["cost_usd_max"])
    return est


def _short(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
