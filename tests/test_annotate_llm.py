"""The real anthropic SDK against a local Messages API server: retries, cache, concurrency,
failures, and the API key kept out of every written file."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import anthropic
import pytest

from _anthropic_server import MessagesServer, Raw, message, overloaded, rate_limited, server_error
from interplm_jax.annotate.config import LLMConfig
from interplm_jax.annotate.llm import LLM, ParseError, Request, make_client, write_dry_run
from interplm_jax.errors import InputError

KEY = "sk-ant-test-0123456789-SECRET"


def parse_upper(text: str) -> str:
    if not text.startswith("ANSWER:"):
        raise ParseError(f"expected 'ANSWER:', got {text[:20]!r}")
    return text[len("ANSWER:"):].strip()


def reqs(n: int, tag: str = "q") -> list[Request]:
    return [Request(f"{tag}-{i}", "system text", f"prompt {tag} {i}", 64) for i in range(n)]


def llm_for(server: MessagesServer, tmp_path: Path, monkeypatch, **kw) -> LLM:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    cfg = LLMConfig(base_url=server.url, **{"max_retries": 2, "timeout_s": 10.0, **kw})
    return LLM(cfg, tmp_path / "cache")


def files_text(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_answers_parse_and_the_key_travels_only_in_the_header(tmp_path, monkeypatch):
    with MessagesServer(lambda body, n: f"ANSWER: {body['messages'][0]['content']}") as srv:
        llm = llm_for(srv, tmp_path, monkeypatch)
        out = llm.run(reqs(3), parse_upper)
    assert [o.value for o in out] == ["prompt q 0", "prompt q 1", "prompt q 2"]
    assert all(o.ok and not o.cached for o in out)
    assert srv.count == 3
    # the SDK sends the key in a header (x-api-key or a bearer token, by SDK version) only
    assert all(KEY in h.get("x-api-key", "") + h.get("authorization", "") for h in srv.headers)
    assert all(KEY not in json.dumps(b) for b in srv.requests)
    body = srv.requests[0]
    assert body["model"] == LLMConfig().model and body["max_tokens"] == 64
    assert body["system"] == "system text"
    assert llm.usage["requests"] == 3 and llm.usage["input_tokens"] > 0


def test_rate_limit_then_success_is_retried(tmp_path, monkeypatch):
    def responder(body, n):
        return rate_limited() if n == 1 else "ANSWER: fine"

    with MessagesServer(responder) as srv:
        (o,) = llm_for(srv, tmp_path, monkeypatch).run(reqs(1), parse_upper)
    assert o.ok and o.value == "fine"
    assert srv.count == 2


def test_errors_past_the_retry_limit_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    def responder(body, n):
        content = body["messages"][0]["content"]
        if content.endswith(" 1"):
            return server_error()
        if content.endswith(" 2"):
            return overloaded()
        return "ANSWER: ok"

    with MessagesServer(responder) as srv:
        llm = llm_for(srv, tmp_path, monkeypatch, max_retries=2)
        out = llm.run(reqs(4), parse_upper)
    assert [o.ok for o in out] == [True, False, False, True]
    assert "HTTP 500" in out[1].error and "HTTP 529" in out[2].error
    # 2 good requests + 2 failing ones tried 1 + max_retries times each
    assert srv.count == 2 + 2 * 3
    assert llm.usage["failed"] == 2
    # failures are not cached: only the two answers are on disk
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2


def test_unparseable_answer_fails_that_request_only_and_is_asked_again(tmp_path, monkeypatch):
    def responder(body, n):
        return "I cannot comply" if body["messages"][0]["content"].endswith(" 0") else "ANSWER: y"

    with MessagesServer(responder) as srv:
        llm = llm_for(srv, tmp_path, monkeypatch)
        out = llm.run(reqs(2), parse_upper)
        assert not out[0].ok and out[0].error.startswith("unparseable answer")
        assert out[0].text == "I cannot comply"
        assert out[1].ok
        again = llm.run(reqs(2), parse_upper)
    assert srv.count == 3  # the good answer came from the cache, the bad one was asked again
    assert again[1].cached and not again[0].ok


def test_cache_hit_makes_no_request_and_holds_no_key(tmp_path, monkeypatch):
    with MessagesServer(lambda body, n: "ANSWER: cached") as srv:
        first = llm_for(srv, tmp_path, monkeypatch).run(reqs(5), parse_upper)
        second = llm_for(srv, tmp_path, monkeypatch).run(reqs(5), parse_upper)
        assert srv.count == 5
        # another model or prompt is another cache key
        llm_for(srv, tmp_path, monkeypatch, model="claude-haiku-4-5").run(reqs(1), parse_upper)
        assert srv.count == 6
    assert all(o.ok and not o.cached for o in first)
    assert all(o.ok and o.cached and o.value == "cached" for o in second)
    written = files_text(tmp_path)
    assert written and all(KEY.encode() not in data for _, data in written)


def test_concurrency_is_bounded(tmp_path, monkeypatch):
    with MessagesServer(lambda body, n: "ANSWER: z", delay_s=0.15) as srv:
        out = llm_for(srv, tmp_path, monkeypatch, concurrency=3).run(reqs(12), parse_upper)
    assert all(o.ok for o in out)
    assert srv.max_in_flight == 3


def test_bad_key_or_unknown_model_stops_the_run(tmp_path, monkeypatch):
    with MessagesServer(lambda body, n: (401, {}, "authentication_error")) as srv:
        with pytest.raises(InputError, match="ANTHROPIC_API_KEY"):
            llm_for(srv, tmp_path, monkeypatch).run(reqs(2), parse_upper)
    with MessagesServer(lambda body, n: (404, {}, "not_found_error")) as srv:
        with pytest.raises(InputError, match="model"):
            llm_for(srv, tmp_path, monkeypatch).run(reqs(1), parse_upper)


def test_missing_key_is_a_clear_error_but_dry_run_needs_none(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(InputError, match="ANTHROPIC_API_KEY is not set"):
        make_client(LLMConfig())
    llm = LLM(LLMConfig(chars_per_token=4.0), tmp_path / "cache")
    rs = [Request("a", "s" * 40, "p" * 360, 100), Request("b", "", "p" * 400, 50)]
    est = write_dry_run(llm, rs, tmp_path / "dry", "x")
    assert est["input_tokens_estimate"] == 200 and est["output_tokens_max"] == 150
    assert est["cost_usd_max"] == pytest.approx((200 * 3.0 + 150 * 15.0) / 1e6, abs=1e-4)
    assert (tmp_path / "dry" / "prompts" / "a.txt").read_text().count("p" * 360) == 1
    assert json.loads((tmp_path / "dry" / "estimate_x.json").read_text()) == est


def test_client_is_the_real_sdk_with_config_settings(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    c = make_client(LLMConfig(max_retries=5, timeout_s=33.0, base_url="http://127.0.0.1:9"))
    assert isinstance(c, anthropic.Anthropic)
    assert c.max_retries == 5 and str(c.base_url).startswith("http://127.0.0.1:9")


def test_time_out_is_retried(tmp_path, monkeypatch):
    import time

    def responder(body, n):
        if n == 1:
            time.sleep(3.0)  # past the client's time-out: the SDK gives up and retries
        return "ANSWER: late"

    with MessagesServer(responder) as srv:
        (o,) = llm_for(srv, tmp_path, monkeypatch, timeout_s=1.0).run(reqs(1), parse_upper)
    assert o.ok and o.value == "late"
    assert srv.count == 2


def _without(key: str):
    """A malformed answer: a normal message JSON without ``key``."""
    def make(body, n):
        m = message(body, "ANSWER: x", n)
        del m[key]
        return Raw(json.dumps(m).encode())
    return make


MALFORMED_200 = {
    "bad JSON": lambda body, n: Raw(b'{"id": "msg_1", "type": "mess'),
    "HTML page": lambda body, n: Raw(b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "no usage": _without("usage"),
    "content null": lambda body, n: Raw(json.dumps({**message(body, "x", n), "content": None}).encode()),
}


@pytest.mark.parametrize("kind", MALFORMED_200)
def test_a_malformed_200_is_retried_then_a_failed_request_and_the_run_goes_on(kind, tmp_path,
                                                                             monkeypatch):
    bad, asked = MALFORMED_200[kind], collections.Counter()

    def responder(body, n):
        content = body["messages"][0]["content"]
        asked[content] += 1
        if content.endswith(" 0"):
            return bad(body, n)  # always
        if content.endswith(" 1") and asked[content] <= 2:
            return bad(body, n)  # twice, then a good answer
        return "ANSWER: ok"

    with MessagesServer(responder) as srv:
        llm = llm_for(srv, tmp_path, monkeypatch, max_retries=2)
        out = llm.run(reqs(3), parse_upper)
        assert [o.ok for o in out] == [False, True, True]
        assert out[0].error.startswith("malformed answer (HTTP 200)")
        assert out[0].error.endswith("after 2 retries")
        assert asked == {"prompt q 0": 3, "prompt q 1": 3, "prompt q 2": 1}
        assert llm.usage["failed"] == 1 and llm.usage["requests"] == 2


def test_an_error_the_sdk_does_not_retry_does_not_claim_retries(tmp_path, monkeypatch):
    with MessagesServer(lambda body, n: (400, {}, "invalid_request_error")) as srv:
        (o,) = llm_for(srv, tmp_path, monkeypatch, max_retries=2).run(reqs(1), parse_upper)
    assert srv.count == 1 and not o.ok
    assert o.error.startswith("HTTP 400 (not retried): ") and "retries" not in o.error
