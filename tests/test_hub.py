"""chatcore.library.hub against a Hub on 127.0.0.1.

The real `huggingface_hub` library (2.4.0) talks HTTP to tests/hub_server.py, a local server
that answers the Hub's routes from a temporary folder, because the real Hub is out of reach
here. In this process the Hub gets the server's address as `endpoint=` and a temporary
`cache_dir=` (huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE once, at import, and other
tests import it first); the SIGKILL test runs the app's `--download` in a child process
that finds both through the HF_ENDPOINT and HF_HUB_CACHE environment variables.

The repos served: the real SmolLM2-135M-Instruct GGUF (98 MB), a GGUF repo with a split file,
several quantization names and a vision projector, and a tiny transformers checkpoint.
Assertions are on bytes sent, requests made and the order of events, never on time.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backends.gguf import read_gguf_header
from backends.hf_memory import checkpoint_shape
from chatcore.library.download_queue import DownloadJob, DownloadQueue
from chatcore.library.hub import Hub, quantization_of
from chatcore.library.hub_errors import DownloadCancelled, HubError
from chatcore.i18n import english
from chatui.library_handlers import download_progress
from tests.conftest import ROOT, SMOLLM2_FILE
from tests.hub_server import HubServer

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
TINY = "tester/tiny-llama-GGUF"
CKPT = "tester/tiny-llama"
SPLIT_FIRST = "tiny-Q2_K-00001-of-00002.gguf"
SPLIT_SECOND = "tiny-Q2_K-00002-of-00002.gguf"
DUMMY_SIZES = {"tiny-IQ4_XS.gguf": 2_500_000, "tiny-Q4_K_M.gguf": 3_000_000,
               "tiny-Q8_0.gguf": 5_000_000, "tiny-F16.gguf": 8_000_000,
               "mmproj-tiny-f16.gguf": 1_000_000}
# A hang guard, not a timing: these waits span a child Python process importing
# huggingface_hub, which on a busy machine takes far longer than one event.
CHILD_WAIT_S = 120


# -- the served repos -------------------------------------------------------------------------
def _write_split_gguf(folder: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(folder / "tiny-Q2_K.gguf", "llama", split_max_tensors=2)
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_feed_forward_length(32)
    writer.add_uint32("llama.vocab_size", 64)
    for i, name in enumerate(["token_embd.weight", "blk.0.attn_q.weight", "blk.1.attn_q.weight",
                              "output.weight"]):
        width = 64 if name in ("token_embd.weight", "output.weight") else 16
        writer.add_tensor(name, np.full((16, width), i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_checkpoint(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    hidden, kv, inter, vocab, layers = 64, 32, 128, 1000, 2
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": inter, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": layers, "vocab_size": vocab, "max_position_embeddings": 512}))
    tensors = {"model.embed_tokens.weight": torch.zeros(vocab, hidden),
               "model.norm.weight": torch.ones(hidden),
               "lm_head.weight": torch.zeros(vocab, hidden)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        tensors.update({
            prefix + "self_attn.q_proj.weight": torch.zeros(hidden, hidden),
            prefix + "self_attn.k_proj.weight": torch.zeros(kv, hidden),
            prefix + "self_attn.v_proj.weight": torch.zeros(kv, hidden),
            prefix + "self_attn.o_proj.weight": torch.zeros(hidden, hidden),
            prefix + "mlp.gate_proj.weight": torch.zeros(inter, hidden),
            prefix + "mlp.up_proj.weight": torch.zeros(inter, hidden),
            prefix + "mlp.down_proj.weight": torch.zeros(hidden, inter),
            prefix + "input_layernorm.weight": torch.ones(hidden),
            prefix + "post_attention_layernorm.weight": torch.ones(hidden)})
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory, smollm2_path: Path) -> Path:
    root = tmp_path_factory.mktemp("hub")
    smol = root / SMOL
    smol.mkdir(parents=True)
    try:
        os.link(smollm2_path, smol / SMOLLM2_FILE)
    except OSError:  # another filesystem: a copy
        import shutil

        shutil.copyfile(smollm2_path, smol / SMOLLM2_FILE)
    (smol / "README.md").write_text("SmolLM2 in GGUF\n")
    tiny = root / TINY
    tiny.mkdir(parents=True)
    _write_split_gguf(tiny)
    for i, (name, size) in enumerate(DUMMY_SIZES.items()):
        (tiny / name).write_bytes(np.random.default_rng(i).bytes(size))
    ckpt = root / CKPT
    ckpt.mkdir(parents=True)
    _write_checkpoint(ckpt)
    return root


@pytest.fixture(scope="module")
def server(hub_root: Path):
    with HubServer(hub_root) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_switches(server: HubServer, monkeypatch):
    # Another test may have set HF_HUB_OFFLINE before huggingface_hub was imported.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server.clear()
    server.reset_counters()
    yield
    server.clear()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture
def hub(server: HubServer, cache: Path) -> Hub:
    return Hub(endpoint=server.endpoint, token=False, timeout=30, cache_dir=cache)


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cached_files(cache: Path) -> list[Path]:
    """Every blob, partial file and snapshot entry in the cache."""
    return sorted(p for p in cache.rglob("*") if p.is_file() or p.is_symlink()
                  if ".locks" not in p.parts and p.parent.name != "refs")


def blob_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--")) / "blobs"


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.endswith(".") and message.count(". ") == 0


# -- search and listing ---------------------------------------------------------------------
def test_search_finds_repos_by_text_and_kind(hub: Hub, server: HubServer):
    server.set_stats(SMOL, downloads=900, likes=40)
    server.set_stats(TINY, downloads=50, likes=2)
    server.set_stats(CKPT, downloads=70, likes=3)

    smol = hub.search("smollm2")
    assert [(r.repo_id, r.kind, r.downloads, r.likes) for r in smol] == [(SMOL, "gguf", 900, 40)]
    assert [r.repo_id for r in hub.search("tiny-llama", kind="gguf")] == [TINY]
    checkpoints = hub.search("tiny-llama", kind="checkpoint")
    assert [(r.repo_id, r.kind) for r in checkpoints] == [(CKPT, "checkpoint")]
    assert [r.repo_id for r in hub.search("", kind="gguf")] == [SMOL, TINY]  # most downloaded first
    assert [r.repo_id for r in hub.search("", kind="gguf", limit=1)] == [SMOL]
    assert hub.search("no-such-model") == []
    search = [r for r in server.requests if r.path == "/api/models"]
    assert search, "search goes through GET /api/models"


def test_listing_groups_quantizations_with_sizes_and_sha256(hub: Hub, hub_root: Path):
    listing = hub.listing(TINY)
    folder = hub_root / TINY
    by_quant = {f.quantization: f for f in listing.gguf_files}
    assert set(by_quant) == {"Q2_K", "IQ4_XS", "Q4_K_M", "Q8_0", "F16"}  # the projector is left out
    assert [f.size for f in listing.gguf_files] == sorted(f.size for f in listing.gguf_files)
    split = by_quant["Q2_K"]
    assert split.filename == SPLIT_FIRST
    assert split.parts == (SPLIT_FIRST, SPLIT_SECOND)
    assert split.size == sum((folder / name).stat().st_size for name in split.parts)
    assert split.part_sha256 == (sha256_of(folder / SPLIT_FIRST), sha256_of(folder / SPLIT_SECOND))
    single = by_quant["Q4_K_M"]
    assert (single.filename, single.size, single.parts) == ("tiny-Q4_K_M.gguf", 3_000_000,
                                                            ("tiny-Q4_K_M.gguf",))
    assert single.sha256 == sha256_of(folder / "tiny-Q4_K_M.gguf")
    assert listing.checkpoint_bytes is None

    smol = hub.listing(SMOL)
    assert [(f.filename, f.quantization, f.sha256) for f in smol.gguf_files] == [
        (SMOLLM2_FILE, "Q4_1", sha256_of(hub_root / SMOL / SMOLLM2_FILE))]

    checkpoint = hub.listing(CKPT)
    assert checkpoint.gguf_files == ()
    assert checkpoint.checkpoint_bytes == (hub_root / CKPT / "model.safetensors").stat().st_size


def test_quantization_names_from_file_names():
    assert quantization_of("Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quantization_of("mistral-7b-instruct-v0.2.Q5_K_S.gguf") == "Q5_K_S"
    assert quantization_of("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf") == "Q4_K_M"
    assert quantization_of("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf") == "IQ4_XS"
    assert quantization_of("ggml-model-f16.gguf") == "F16"
    assert quantization_of("model-bf16.gguf") == "BF16"
    assert quantization_of("Qwen2-7B.gguf") is None


# -- shapes from range reads ----------------------------------------------------------------
def test_gguf_header_comes_from_a_range_read(hub: Hub, server: HubServer, hub_root: Path):
    local = hub_root / SMOL / SMOLLM2_FILE
    metadata, tensors, size = hub.gguf_header(SMOL, SMOLLM2_FILE)

    expected_metadata, expected_tensors = read_gguf_header(local)
    assert metadata == expected_metadata
    assert tensors == expected_tensors
    assert size == local.stat().st_size
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.context_length"] == 8192
    assert len(tensors) == 272
    sent = server.bytes_sent(SMOL, SMOLLM2_FILE)
    assert sent <= 2 * 2**20 < size // 40, f"{sent} bytes sent of {size}"
    gets = server.resolve_requests(SMOL, SMOLLM2_FILE)
    assert [r.range for r in gets] == ["bytes=0-2097151"]


def test_gguf_header_reads_on_when_the_header_is_longer(hub: Hub, server: HubServer,
                                                        hub_root: Path):
    local = hub_root / SMOL / SMOLLM2_FILE
    metadata, tensors, _ = hub.gguf_header(SMOL, SMOLLM2_FILE, first_bytes=256 * 2**10)

    assert (metadata, tensors) == read_gguf_header(local)
    ranges = [r.range for r in server.resolve_requests(SMOL, SMOLLM2_FILE)]
    # The header ends at 1.8 MB: 256 KiB, then only the bytes not read yet, doubling.
    assert ranges == ["bytes=0-262143", "bytes=262144-524287", "bytes=524288-1048575",
                      "bytes=1048576-2097151"]
    assert server.bytes_sent(SMOL, SMOLLM2_FILE) == 2 * 2**20


def test_split_gguf_header_has_every_parts_tensors(hub: Hub, hub_root: Path):
    folder = hub_root / TINY
    metadata, tensors, size = hub.gguf_header(TINY, SPLIT_FIRST)

    first_meta, first_tensors = read_gguf_header(folder / SPLIT_FIRST)
    _, second_tensors = read_gguf_header(folder / SPLIT_SECOND)
    assert metadata == first_meta
    assert metadata["split.count"] == 2
    assert tensors == first_tensors + second_tensors
    assert size == (folder / SPLIT_FIRST).stat().st_size + (folder / SPLIT_SECOND).stat().st_size


def test_checkpoint_shape_from_safetensors_headers(hub: Hub, server: HubServer, hub_root: Path):
    shape = hub.checkpoint_shape(CKPT)

    assert shape == checkpoint_shape(hub_root / CKPT)
    assert (shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.vocab_size) == (2, 2, 16, 1000)
    weights = (hub_root / CKPT / "model.safetensors").stat().st_size
    sent = server.bytes_sent(CKPT, "model.safetensors")
    assert 0 < sent <= 100_001 < weights, f"{sent} bytes of {weights} sent: weights were fetched"
    assert all(r.range for r in server.resolve_requests(CKPT, "model.safetensors"))


# -- downloads ------------------------------------------------------------------------------
def test_download_lands_in_the_cache(hub: Hub, server: HubServer, cache: Path, hub_root: Path):
    from huggingface_hub import try_to_load_from_cache

    seen: list[tuple[int, int]] = []
    path = hub.download(SMOL, SMOLLM2_FILE, progress=lambda done, total: seen.append((done, total)))

    local = hub_root / SMOL / SMOLLM2_FILE
    size = local.stat().st_size
    assert path.is_relative_to(cache)
    assert try_to_load_from_cache(SMOL, SMOLLM2_FILE, cache_dir=cache) == str(path)
    assert sha256_of(path) == sha256_of(local)
    assert server.bytes_sent(SMOL, SMOLLM2_FILE) == size
    dones = [done for done, _ in seen]
    assert dones == sorted(dones) and len(set(dones)) > 10
    assert {total for _, total in seen} == {size}
    assert seen[-1] == (size, size)
    assert not list(blob_dir(cache, SMOL).glob("*.incomplete"))

    assert hub.download(SMOL, SMOLLM2_FILE) == path  # in the cache: nothing is fetched again
    assert server.bytes_sent(SMOL, SMOLLM2_FILE) == size


def test_split_download_fetches_every_part(hub: Hub, server: HubServer, hub_root: Path):
    seen: list[tuple[int, int]] = []
    path = hub.download(TINY, SPLIT_SECOND, progress=lambda d, t: seen.append((d, t)))

    assert path.name == SPLIT_FIRST
    total = sum((hub_root / TINY / name).stat().st_size for name in (SPLIT_FIRST, SPLIT_SECOND))
    for name in (SPLIT_FIRST, SPLIT_SECOND):
        assert sha256_of(path.parent / name) == sha256_of(hub_root / TINY / name)
    assert seen[-1] == (total, total)


def test_cancel_mid_way_then_resume(hub: Hub, server: HubServer, cache: Path, hub_root: Path):
    local = hub_root / SMOL / SMOLLM2_FILE
    size = local.stat().st_size
    cut = 33_333_333  # on no chunk boundary
    server.throttle(SMOL, SMOLLM2_FILE, delay_s=0.0005)
    server.hold(SMOL, SMOLLM2_FILE, after_bytes=cut)  # the server stops there until released
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= cut:
            cancel.set()  # the person presses Cancel while the bytes stand at `cut`

    with pytest.raises(DownloadCancelled) as caught:
        hub.download(SMOL, SMOLLM2_FILE, progress=progress, cancel=cancel)
    assert SMOL in str(caught.value) and SMOLLM2_FILE in str(caught.value)
    partial = next(blob_dir(cache, SMOL).glob("*.incomplete"))
    assert partial.stat().st_size == cut
    assert not (cache / f"models--{SMOL.replace('/', '--')}" / "snapshots").exists()

    server.clear()
    path = hub.download(SMOL, SMOLLM2_FILE)
    assert sha256_of(path) == sha256_of(local)
    ranges = [r.range for r in server.resolve_requests(SMOL, SMOLLM2_FILE)]
    assert ranges == ["bytes=0-", f"bytes={cut}-"]
    # Nothing fetched twice: within size + one network read of slack, and exactly here.
    assert server.bytes_sent(SMOL, SMOLLM2_FILE) == size


@pytest.mark.slow
def test_sigkill_mid_way_then_resume(server: HubServer, tmp_path: Path, hub_root: Path):
    cache = tmp_path / "child-cache"
    local = hub_root / SMOL / SMOLLM2_FILE
    size = local.stat().st_size
    cut = 41_000_001
    rule = server.hold(SMOL, SMOLLM2_FILE, after_bytes=cut)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=server.endpoint, HF_HUB_CACHE=str(cache),
               HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(ROOT))
    def run_child() -> subprocess.Popen:  # the app's own download command
        return subprocess.Popen(
            [sys.executable, str(ROOT / "chat_app.py"), "--download", SMOL, "--file",
             SMOLLM2_FILE, "--data-dir", str(tmp_path / "data")], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = run_child()
    try:
        assert rule.reached.wait(CHILD_WAIT_S), "the child never reached the held byte"
        partial = blob_dir(cache, SMOL) / (sha256_of(local) + ".incomplete")
        deadline = time.monotonic() + CHILD_WAIT_S
        while not (partial.exists() and partial.stat().st_size == cut):
            assert time.monotonic() < deadline, "the child never wrote the bytes it received"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        assert first.wait(CHILD_WAIT_S) == -signal.SIGKILL
    finally:
        first.kill()
        first.communicate()
    assert partial.stat().st_size == cut

    server.clear()
    second = run_child()
    out, err = second.communicate(timeout=CHILD_WAIT_S)
    assert second.returncode == 0, err
    path = Path(out.splitlines()[0].rsplit(" to ", 1)[1])
    assert path.is_relative_to(cache)
    assert sha256_of(path) == sha256_of(local)
    ranges = [r.range for r in server.resolve_requests(SMOL, SMOLLM2_FILE)]
    assert ranges == ["bytes=0-", f"bytes={cut}-"]
    assert server.bytes_sent(SMOL, SMOLLM2_FILE) == size  # <= size + one chunk: exactly size


def test_dropped_connection_resumes_within_the_call(hub: Hub, server: HubServer, hub_root: Path):
    name = "tiny-Q8_0.gguf"
    server.drop(TINY, name, after_bytes=1_234_567)

    path = hub.download(TINY, name)

    assert sha256_of(path) == sha256_of(hub_root / TINY / name)
    assert [r.range for r in server.resolve_requests(TINY, name)] == ["bytes=0-", "bytes=1234567-"]
    assert server.bytes_sent(TINY, name) == DUMMY_SIZES[name]


def test_wrong_sha256_is_refused_and_leaves_nothing(hub: Hub, server: HubServer, cache: Path,
                                                   hub_root: Path):
    name = "tiny-Q4_K_M.gguf"
    server.wrong_sha256(TINY, name)

    with pytest.raises(HubError) as caught:
        hub.download(TINY, name)

    message = str(caught.value)
    assert TINY in message and name in message and "sha256 mismatch" in message
    assert one_sentence(message), message
    assert cached_files(cache) == []  # no blob, no partial file, no snapshot link

    server.clear()
    assert sha256_of(hub.download(TINY, name)) == sha256_of(hub_root / TINY / name)


@pytest.mark.parametrize("status, cause", [
    (404, "404 not found"), (500, "500 server error"), (401, "needs a token"),
    (429, "429 rate limited")])
def test_http_errors_are_one_sentence(hub: Hub, server: HubServer, hub_root: Path, status: int,
                                      cause: str):
    name = "tiny-IQ4_XS.gguf"
    server.fail(TINY, name, status=status, retry_after=30 if status == 429 else None)

    with pytest.raises(HubError) as caught:
        hub.download(TINY, name)

    message = str(caught.value)
    assert TINY in message and name in message and cause in message, message
    assert one_sentence(message), message
    assert caught.value.status == status
    if status == 401:
        assert "HF_TOKEN" in message
    if status == 429:
        assert "30 s" in message
    with pytest.raises(HubError, match=cause):
        hub.gguf_header(TINY, name)

    server.clear()
    assert sha256_of(hub.download(TINY, name)) == sha256_of(hub_root / TINY / name)


def test_missing_repo_and_file_say_so(hub: Hub):
    with pytest.raises(HubError, match=r"no-such\.gguf from .*404 not found \(no such file"):
        hub.download(TINY, "no-such.gguf")
    with pytest.raises(HubError, match=r"tester/nothing.*404 not found \(no such repo\)"):
        hub.listing("tester/nothing")


def test_listing_failure_names_the_repo(hub: Hub, server: HubServer):
    server.fail(CKPT, status=503)
    with pytest.raises(HubError, match=rf"^Listing the files of {CKPT} failed: 503 server error"):
        hub.listing(CKPT)
    with pytest.raises(HubError, match=CKPT):
        hub.checkpoint_shape(CKPT)
    server.clear()
    assert hub.listing(CKPT).checkpoint_bytes


def test_unreachable_and_offline_are_said(cache: Path, monkeypatch):
    from huggingface_hub import constants

    from tests.conftest import free_port

    nobody = Hub(endpoint=f"http://127.0.0.1:{free_port()}", token=False, timeout=5,
                 cache_dir=cache)
    unreachable = "failed: the Hub is unreachable at http://127.0.0.1:"
    with pytest.raises(HubError, match=f"{SMOLLM2_FILE} from {SMOL} {unreachable}"):
        nobody.download(SMOL, SMOLLM2_FILE)
    with pytest.raises(HubError, match=f"Searching the Hub for 'smol' {unreachable}"):
        nobody.search("smol")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"offline mode is on \(HF_HUB_OFFLINE is set\)"):
        nobody.listing(SMOL)


def test_disk_full_is_said_before_any_byte(hub: Hub, server: HubServer, monkeypatch):
    import shutil
    from types import SimpleNamespace

    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=10**6))
    with pytest.raises(HubError, match=r"tiny-F16.gguf from .* disk full, it needs 8 MB more"):
        hub.download(TINY, "tiny-F16.gguf")
    assert server.bytes_sent(TINY, "tiny-F16.gguf") == 0


def impatient(hub: Hub) -> Hub:
    """The same Hub with a short timeout, for calls that must time out."""
    return Hub(endpoint=hub.endpoint, token=False, timeout=1.0, cache_dir=hub.cache_dir)


@pytest.mark.slow
def test_stalled_server_times_out_then_works(hub: Hub, server: HubServer, hub_root: Path):
    name = "tiny-IQ4_XS.gguf"
    server.stall(TINY, name)  # accepts the request, never answers

    with pytest.raises(HubError) as caught:
        impatient(hub).download(TINY, name)
    message = str(caught.value)
    assert TINY in message and name in message and "timed out" in message, message
    assert one_sentence(message), message
    with pytest.raises(HubError, match=rf"{name} in {TINY} failed: timed out"):
        impatient(hub).gguf_header(TINY, name)

    server.clear()
    assert sha256_of(hub.download(TINY, name)) == sha256_of(hub_root / TINY / name)


@pytest.mark.slow
def test_stall_mid_body_resumes_within_the_call(hub: Hub, server: HubServer, hub_root: Path):
    name = "tiny-F16.gguf"
    server.stall(TINY, name, after_bytes=3_000_001, times=1)

    path = impatient(hub).download(TINY, name)

    assert sha256_of(path) == sha256_of(hub_root / TINY / name)
    assert [r.range for r in server.resolve_requests(TINY, name)] == ["bytes=0-", "bytes=3000001-"]
    assert server.bytes_sent(TINY, name) == DUMMY_SIZES[name]


@pytest.mark.slow
def test_stall_without_progress_keeps_the_bytes(hub: Hub, server: HubServer, hub_root: Path):
    name = "tiny-F16.gguf"
    server.stall(TINY, name, after_bytes=0)  # headers, then nothing, on every try

    with pytest.raises(HubError, match=r"timed out.*the next try resumes"):
        impatient(hub).download(TINY, name)
    server.clear()
    assert sha256_of(hub.download(TINY, name)) == sha256_of(hub_root / TINY / name)


# -- the queue ------------------------------------------------------------------------------
def test_queue_runs_one_download_at_a_time(hub: Hub, server: HubServer, hub_root: Path):
    done: list[tuple[str, str, Path]] = []
    queue = DownloadQueue(hub, on_done=lambda repo, name, path: done.append((repo, name, path)))
    try:
        rule = server.hold(SMOL, SMOLLM2_FILE, after_bytes=10_000_000)
        first = queue.submit(SMOL, SMOLLM2_FILE)
        second = queue.submit(TINY, "tiny-Q8_0.gguf")
        third = queue.submit(TINY, "tiny-F16.gguf")
        assert queue.submit(SMOL, SMOLLM2_FILE) == first  # the same file is one job
        assert rule.reached.wait(CHILD_WAIT_S)

        states = {job.job_id: job.state for job in queue.jobs()}
        assert states == {first: "downloading", second: "queued", third: "queued"}
        assert queue.cancel(third)
        assert {j.job_id: j.state for j in queue.jobs()}[third] == "cancelled"
        running = next(j for j in queue.jobs() if j.job_id == first)
        assert running.total_bytes == (hub_root / SMOL / SMOLLM2_FILE).stat().st_size
        server.release()

        finished = [queue.wait(job_id, CHILD_WAIT_S) for job_id in (first, second)]
        assert [j.state for j in finished] == ["done", "done"]
        assert done == [(SMOL, SMOLLM2_FILE, finished[0].path),
                        (TINY, "tiny-Q8_0.gguf", finished[1].path)]
        assert sha256_of(finished[1].path) == sha256_of(hub_root / TINY / "tiny-Q8_0.gguf")
        assert server.max_concurrent_bodies == 1  # never two downloads at once
        assert server.resolve_requests(TINY, "tiny-F16.gguf", method="HEAD") == []
        assert not queue.cancel(first)  # done: nothing to cancel
        assert download_progress(finished[0], english()) == "done · 98 MB"
    finally:
        queue.close()


def test_queue_cancels_the_running_download(hub: Hub, server: HubServer):
    queue = DownloadQueue(hub)
    try:
        rule = server.hold(TINY, "tiny-F16.gguf", after_bytes=1_000_000)
        job = queue.submit(TINY, "tiny-F16.gguf")
        assert rule.reached.wait(CHILD_WAIT_S)
        assert queue.cancel(job)
        server.release()  # the next bytes arrive and the worker sees the cancel
        ended = queue.wait(job, CHILD_WAIT_S)
        assert ended.state == "cancelled" and ended.path is None
        assert download_progress(ended, english()).startswith("cancelled at ")
    finally:
        queue.close()


def test_queue_reports_a_failure_and_goes_on(hub: Hub, server: HubServer):
    queue = DownloadQueue(hub)
    try:
        server.fail(TINY, "tiny-IQ4_XS.gguf", status=404)
        bad = queue.submit(TINY, "tiny-IQ4_XS.gguf")
        good = queue.submit(TINY, "tiny-Q4_K_M.gguf")
        failed, ok = queue.wait(bad, CHILD_WAIT_S), queue.wait(good, CHILD_WAIT_S)
        assert failed.state == "failed" and "404 not found" in failed.error
        assert download_progress(failed, english()) == f"failed: {failed.error}"
        assert ok.state == "done" and ok.path is not None
    finally:
        queue.close()


def test_download_progress_in_words():
    """The Models tab's line for a download (chatui/library_handlers.py), in English."""
    job = DownloadJob("j", SMOL, SMOLLM2_FILE, "downloading", 412_000_000, 4_700_000_000,
                      38_000_000.0, 112.0, None, None)
    assert download_progress(job, english()) == "412 MB of 4.7 GB · 38 MB/s · 1 min 52 s left"
    starting = DownloadJob("j", SMOL, SMOLLM2_FILE, "downloading", 0, None, None, None, None, None)
    assert download_progress(starting, english()) == "0 MB"  # memory.format_bytes
    queued = DownloadJob("j", SMOL, SMOLLM2_FILE, "queued", 0, None, None, None, None, None)
    assert download_progress(queued, english()) == "queued"
