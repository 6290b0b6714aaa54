"""Tests for lib_pinning.tokenizer (the real CLIP BPE vocabulary from open_clip_torch, offline)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_pinning import tokenizer as tok
from lib_pinning.tokenizer import (
    EncodingTokenizer,
    Tokenizer,
    TokenizerUnavailableError,
    adapt_tokenizer,
    default_tokenizer,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="open_clip_torch is not installed"
)


@pytest.fixture(scope="module")
def clip() -> EncodingTokenizer:
    return default_tokenizer()


def test_default_tokenizer_does_not_import_open_clip_or_torchvision() -> None:
    # open_clip/tokenizer.py imports torch but encoding never touches it; a stub keeps this child
    # process fast (importing torch takes seconds).
    code = (
        "import sys, types\n"
        "stub = types.ModuleType('torch'); stub.__getattr__ = lambda name: object\n"
        "sys.modules['torch'] = stub\n"
        "from lib_pinning.tokenizer import default_tokenizer\n"
        "t = default_tokenizer()\n"
        "assert t.count_tokens('a photo of a cat') == 5, t.count_tokens('a photo of a cat')\n"
        "bad = [m for m in ('open_clip', 'torchvision') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_splitting_a_word_changes_its_tokens(clip: EncodingTokenizer) -> None:
    # The fact behind token granularity: "photorealistic" is two BPE tokens, "photo" (no
    # end-of-word mark) and "realistic</w>"; tokenized apart, "photo" becomes "photo</w>".
    whole = clip.encode("photorealistic")
    assert len(whole) == 2
    assert clip.encode("photo") + clip.encode("realistic") != whole
    assert clip.encode("realistic") == whole[1:]
    # ...so the whole word is one pre-token, the unit that can be weighted on its own.
    assert clip.pretoken_spans("photorealistic") == [(0, 14)]


def test_pretoken_spans(clip: EncodingTokenizer) -> None:
    text = "a photorealistic cat, score_9!! don't  8k"
    spans = clip.pretoken_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "a", "photorealistic", "cat", ",", "score", "_", "9", "!!", "don", "'t", "8", "k"
    ]


def test_pretoken_spans_follow_the_cleaning(clip: EncodingTokenizer) -> None:
    # ftfy turns the curly apostrophe into "'" (so "’t" is a contraction) and HTML entities are
    # unescaped: on the raw text these would look like separate pre-tokens.
    text = "don’t &amp; x"
    assert [text[a:b] for a, b in clip.pretoken_spans(text)] == ["don", "’t", "&amp;", "x"]


TEXTS = st.lists(
    st.sampled_from(
        ["cat", "photorealistic", " ", "  ", ",", "!!", "_", "9", "12", "'s", "don't", "’", "&amp;", "é", "e\u0301",
         "ﬁ", "Ｗ", "日本", "🙂", "<|endoftext|>", "(", ")", ".", "İ", "ß", "\n"]
    ),
    max_size=10,
).map("".join)


@given(TEXTS)
@settings(derandomize=True, max_examples=150, deadline=None)
def test_pretokens_encode_independently(text: str) -> None:
    clip = default_tokenizer()
    spans = clip.pretoken_spans(text)
    assert all(0 <= a < b <= len(text) for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    pieces = [token for a, b in spans for token in clip.encode(text[a:b])]
    assert pieces == clip.encode(text)
    assert clip.count_tokens(text) == len(pieces)


class FakeHF:
    """The slice of a Hugging Face CLIPTokenizer the adapter uses."""

    def __init__(self, encode: Any) -> None:
        self._encode = encode
        self.calls: list[dict[str, Any]] = []

    def get_vocab(self) -> dict[str, int]:
        return {}

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        self.calls.append(kwargs)
        return {"input_ids": list(self._encode(text))}


def test_adapt_tokenizer_accepts_hf_encode_and_callables(clip: EncodingTokenizer) -> None:
    text = "masterpiece, photorealistic don't!!"
    expected = clip.pretoken_spans(text)

    hf = FakeHF(clip.encode)
    adapted = adapt_tokenizer(hf)
    assert adapted.pretoken_spans(text) == expected
    assert adapted.count_tokens(text) == clip.count_tokens(text)
    assert hf.calls[0] == {"add_special_tokens": False, "truncation": False}

    class WithEncode:
        def encode(self, text: str) -> Sequence[int]:
            return clip.encode(text)

    assert adapt_tokenizer(WithEncode()).pretoken_spans(text) == expected
    assert adapt_tokenizer(clip.encode).pretoken_spans(text) == expected
    assert adapt_tokenizer(clip) is clip
    assert isinstance(clip, Tokenizer)
    with pytest.raises(TypeError, match="cannot use int as a tokenizer"):
        adapt_tokenizer(42)


def test_missing_open_clip_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "open_clip.tokenizer", raising=False)
    monkeypatch.delitem(sys.modules, tok._OPEN_CLIP_MODULE_NAME, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(TokenizerUnavailableError, match="pip install open_clip_torch"):
        tok._load_open_clip_tokenizer_module()


def test_token_granularity_uses_the_default_tokenizer() -> None:
    from lib_pinning.prompt import PromptSpace

    space = PromptSpace("a photorealistic cat, score_9", "lowres", "token")
    assert [(u.prompt, u.text) for u in space.units] == [
        ("positive", "a"), ("positive", "photorealistic"), ("positive", "cat"), ("positive", ","),
        ("positive", "score"), ("positive", "_"), ("positive", "9"), ("negative", "lowres"),
    ]
    x = [0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, -0.1]
    guard = "\\\n"  # prompt.SCHEDULE_GUARD: parts with emphasis start with it
    assert space.render(x) == (guard + "a (photorealistic:1.2) cat, score_9", guard + "(lowres:0.9)")
