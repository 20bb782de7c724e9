"""Model discovery: real layouts of each tool, built in a temporary HOME around the real
SmolLM2 GGUF, and every kind of bad file or odd folder a disk may hold."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from chatcore.library.discovery import ScanResult, ScanRoot, default_roots, inspect_path, scan
from chatcore.library.model_files import FoundModel

SMOL_PARAMS = 134_515_008  # the tensor elements SmolLM2-135M's header lists
SMOL_CONTEXT = 8192  # llama.context_length in its header
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
COMMIT = "4b8f5c3a2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a"
ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


# -- building the layouts ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def smol_digest(smollm2_path: Path) -> str:
    with smollm2_path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def place(source: Path, target: Path) -> Path:
    """A file of its own at `target` holding `source`'s bytes: a hard link where it can be.
    A `target` already there is unlinked first: writing into it would rewrite the shared
    model file in place, under every process that has it mapped (SIGBUS in a running app)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())
    return target


def hf_repo(hub: Path, repo_id: str, files: dict[str, Path | bytes], commit: str = COMMIT,
            ref: bool = True) -> Path:
    """models--Org--Repo the way huggingface_hub writes it: blobs named by their sha256,
    snapshots/<commit>/<file> relative symlinks to them, refs/main holding the commit."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        if isinstance(content, Path):
            with content.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            blob = repo / "blobs" / digest
            if not blob.exists():
                place(content, blob)
        else:
            blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="session")
def checkpoint_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny Llama checkpoint: config.json, a real safetensors file, a chat template."""
    import torch
    from safetensors.torch import save_file

    weights = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    save_file({"model.embed_tokens.weight": torch.zeros(16, 8),
               "model.norm.weight": torch.ones(8)}, str(weights))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8,
              "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 16,
              "max_position_embeddings": 2048, "torch_dtype": "float32"}
    return {"config.json": json.dumps(config).encode(), "model.safetensors": weights.read_bytes(),
            "tokenizer_config.json": json.dumps({"chat_template": "{{ messages }}"}).encode()}


def tiny_gguf(path: Path, split_parts: int = 1) -> list[Path]:
    """A small valid GGUF (one F32 tensor per part); split_parts > 1 writes the
    name-0000N-of-0000M.gguf parts with split.* metadata, as llama.cpp's gguf-split does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=1 if split_parts > 1 else 0)
    writer.add_context_length(4096)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for i in range(split_parts):
        writer.add_tensor(f"blk.{i}.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_parts == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i:05d}-of-{split_parts:05d}.gguf")
            for i in range(1, split_parts + 1)]


def ollama_store(models: Path, smollm2_path: Path, digest: str,
                 manifests: dict[tuple[str, str, str, str], object] | None = None) -> None:
    """blobs/sha256-<hex> and manifests/<registry>/<namespace>/<name>/<tag>."""
    blobs = models / "blobs"
    place(smollm2_path, blobs / f"sha256-{digest}")

    def layer(media: str, text: bytes) -> dict:
        hexdigest = hashlib.sha256(text).hexdigest()
        (blobs / f"sha256-{hexdigest}").write_bytes(text)
        return {"mediaType": f"application/vnd.ollama.image.{media}",
                "digest": f"sha256:{hexdigest}", "size": len(text)}

    template = b"{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}" * 10
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "layers": [{"mediaType": "application/vnd.ollama.image.model",
                            "digest": f"sha256:{digest}", "size": smollm2_path.stat().st_size},
                           layer("template", template),
                           layer("params", b'{"stop": ["<|im_end|>"], "temperature": 0.2}')]}
    if manifests is None:
        manifests = {("registry.ollama.ai", "library", "smollm2", "135m"): manifest}
    for parts, body in manifests.items():
        target = models.joinpath("manifests", *parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body if isinstance(body, str) else json.dumps(body))


def by_name(result: ScanResult, name: str) -> FoundModel:
    matches = [m for m in result.models if m.name == name]
    assert len(matches) == 1, (name, [m.name for m in result.models])
    return matches[0]


def assert_smollm2(model: FoundModel, source: str, smollm2_path: Path,
                   suggested_id: str = "smollm2-135m-instruct-q4_1") -> None:
    assert model.problem is None
    assert (model.source, model.format) == (source, "gguf")
    assert (model.architecture, model.quantization) == ("llama", "Q4_1")
    assert model.context_length == SMOL_CONTEXT
    assert model.has_chat_template is True
    assert model.n_params == SMOL_PARAMS
    assert model.size_bytes == smollm2_path.stat().st_size
    assert model.suggested_id == suggested_id
    assert re.fullmatch(r"[0-9a-f]{10}", model.scan_id)


def assert_well_formed(result: ScanResult) -> None:
    """What every scan promises: sorted, unique ids, ids a registry accepts."""
    keys = [(m.source, m.name.lower()) for m in result.models]
    assert keys == sorted(keys)
    assert len({m.scan_id for m in result.models}) == len(result.models)
    for model in result.models:
        assert ID.fullmatch(model.suggested_id), model.suggested_id


def scan_home(env: dict[str, str], home: Path, **kwargs) -> ScanResult:
    """scan() of the default roots computed from `env` and `home`, less the one fixed
    system folder (/usr/share/ollama/...) that a test's HOME cannot redirect."""
    roots = [r for r in default_roots(env, home) if not str(r.path).startswith("/usr/share/")]
    return scan(roots, env=env, home=home, **kwargs)


# -- each tool's layout -----------------------------------------------------------------------
def test_hugging_face_cache_gguf_and_checkpoint(tmp_path, smollm2_path, smol_digest,
                                                checkpoint_files):
    home = tmp_path / "home"
    hub = home / ".cache" / "huggingface" / "hub"
    hf_repo(hub, SMOL_REPO, {SMOL_FILE: smollm2_path, "README.md": b"# SmolLM2\n"})
    # An older revision holding the same blob: one model, not two.
    hf_repo(hub, SMOL_REPO, {SMOL_FILE: smollm2_path}, commit="0" * 40, ref=False)
    snapshot = hf_repo(hub, "Tiny/llama-chk", checkpoint_files)

    result = scan_home({}, home)

    assert_well_formed(result)
    assert [m.source for m in result.models] == ["huggingface", "huggingface"]
    gguf_model = by_name(result, f"{SMOL_REPO} · {SMOL_FILE}")
    assert_smollm2(gguf_model, "huggingface", smollm2_path)
    blob = hub / f"models--{SMOL_REPO.replace('/', '--')}" / "blobs" / smol_digest
    assert gguf_model.path.resolve() == blob
    assert gguf_model.scan_id == hashlib.sha1(str(blob).encode()).hexdigest()[:10]

    checkpoint = by_name(result, "Tiny/llama-chk")
    assert (checkpoint.format, checkpoint.path) == ("checkpoint", snapshot)
    assert checkpoint.problem is None
    assert (checkpoint.architecture, checkpoint.quantization) == ("llama", "float32")
    assert checkpoint.n_params == 16 * 8 + 8
    assert checkpoint.context_length == 2048
    assert checkpoint.has_chat_template is True
    assert checkpoint.size_bytes == (snapshot / "model.safetensors").stat().st_size
    assert checkpoint.suggested_id == "llama-chk"
    assert result.skipped == ()
    # Stable across scans.
    assert scan_home({}, home) == result


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hugging_face_cache_location_from_env(tmp_path, smollm2_path, variable):
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    hub = elsewhere if variable == "HF_HUB_CACHE" else elsewhere / "hub"
    hf_repo(hub, SMOL_REPO, {SMOL_FILE: smollm2_path})
    # What sits in the default place is not read once the variable points elsewhere.
    hf_repo(home / ".cache" / "huggingface" / "hub", "Other/Repo-GGUF", {"x.gguf": smollm2_path})

    env = {variable: str(elsewhere)}
    assert ScanRoot("huggingface", hub) in default_roots(env, home)
    result = scan_home(env, home)
    assert [m.name for m in result.models] == [f"{SMOL_REPO} · {SMOL_FILE}"]


def test_broken_hugging_face_cache_is_reported_not_raised(tmp_path, smollm2_path):
    hub = tmp_path / "hub"
    hf_repo(hub, SMOL_REPO, {SMOL_FILE: smollm2_path})
    broken = hf_repo(hub, "Org/Broken-GGUF", {"b.gguf": b"GGUF"})
    for blob in (broken.parent.parent / "blobs").iterdir():
        blob.unlink()  # the snapshot's link now points at nothing
    (hub / "not-a-repo").mkdir()

    result = scan(roots=[ScanRoot("huggingface", hub)])
    assert [m.name for m in result.models] == [f"{SMOL_REPO} · {SMOL_FILE}"]
    assert any("Blob missing" in line for line in result.skipped), result.skipped
    assert any("not-a-repo" in line for line in result.skipped), result.skipped


def test_lm_studio_both_folders(tmp_path, smollm2_path):
    home = tmp_path / "home"
    place(smollm2_path, home / ".lmstudio" / "models" / SMOL_REPO / SMOL_FILE)
    place(smollm2_path, home / ".cache" / "lm-studio" / "models" / "bartowski" / "Smol-GGUF"
          / "sub" / "smol.Q4_1.gguf")

    result = scan_home({}, home)
    assert_well_formed(result)
    assert_smollm2(by_name(result, f"{SMOL_REPO} · {SMOL_FILE}"), "lmstudio", smollm2_path)
    older = by_name(result, "bartowski/Smol-GGUF · sub/smol.Q4_1.gguf")
    assert (older.source, older.suggested_id) == ("lmstudio", "smol-q4_1")


def test_ollama_store(tmp_path, smollm2_path, smol_digest):
    home = tmp_path / "home"
    models = home / ".ollama" / "models"
    ollama_store(models, smollm2_path, smol_digest)
    good = json.loads((models / "manifests/registry.ollama.ai/library/smollm2/135m").read_text())
    missing = {**good, "layers": [{**good["layers"][0], "digest": "sha256:" + "ab" * 32}]}
    ollama_store(models, smollm2_path, smol_digest, {
        ("registry.ollama.ai", "library", "smollm2", "latest"): good,
        ("registry.ollama.ai", "someone", "smol", "q4"): good,
        ("hf.co", "HuggingFaceTB", "SmolLM2-135M-Instruct-GGUF", "Q4_1"): good,
        ("registry.ollama.ai", "library", "broken", "latest"): "{not json",
        ("registry.ollama.ai", "library", "gone", "latest"): missing,
    })

    result = scan_home({}, home)
    assert_well_formed(result)
    assert {m.source for m in result.models} == {"ollama"}
    model = by_name(result, "smollm2:135m")
    assert_smollm2(model, "ollama", smollm2_path, suggested_id="smollm2-135m")
    assert model.path == models / "blobs" / f"sha256-{smol_digest}"
    manifest = models / "manifests/registry.ollama.ai/library/smollm2/135m"
    assert model.scan_id == hashlib.sha1(str(manifest).encode()).hexdigest()[:10]
    details = dict(model.details)
    assert details["template"].startswith("{{ if .System }}") and len(details["template"]) == 200
    assert json.loads(details["params"]) == {"stop": ["<|im_end|>"], "temperature": 0.2}
    # Tags sharing one blob are each listed: Ollama lists them.
    assert by_name(result, "smollm2:latest").problem is None
    assert by_name(result, "someone/smol:q4").suggested_id == "someone-smol-q4"
    other = by_name(result, "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1")
    assert other.problem is None
    assert other.suggested_id == "hf.co-huggingfacetb-smollm2-135m-instruct-gguf-q4_1"
    broken = by_name(result, "broken:latest")
    assert broken.problem.startswith("unreadable: ") and "broken/latest" in broken.problem
    gone = by_name(result, "gone:latest")
    assert gone.problem.endswith(f"names a missing blob sha256-{'ab' * 32}")
    assert "gone/latest" in gone.problem


def test_ollama_models_variable_and_llama_cache(tmp_path, smollm2_path, smol_digest):
    home = tmp_path / "home"
    ollama_store(tmp_path / "ollama", smollm2_path, smol_digest)
    place(smollm2_path, tmp_path / "llama-cache" / f"HuggingFaceTB_SmolLM2_{SMOL_FILE}")
    place(smollm2_path, home / ".cache" / "llama.cpp" / "default-place.gguf")  # not read
    place(smollm2_path, home / ".local/share/nomic.ai/GPT4All" / SMOL_FILE)

    env = {"OLLAMA_MODELS": str(tmp_path / "ollama"), "LLAMA_CACHE": str(tmp_path / "llama-cache")}
    roots = default_roots(env, home)
    assert roots[3] == ScanRoot("ollama", tmp_path / "ollama")
    assert ScanRoot("llama.cpp", tmp_path / "llama-cache") in roots
    result = scan_home(env, home)
    assert_well_formed(result)
    names = {(m.source, m.name) for m in result.models}
    assert names == {("ollama", "smollm2:135m"), ("gpt4all", SMOL_FILE),
                     ("llama.cpp", f"HuggingFaceTB_SmolLM2_{SMOL_FILE}")}
    assert_smollm2(by_name(result, f"HuggingFaceTB_SmolLM2_{SMOL_FILE}"), "llama.cpp",
                   smollm2_path, suggested_id="huggingfacetb_smollm2_smollm2-135m-instruct-q4_1")
    assert_smollm2(by_name(result, SMOL_FILE), "gpt4all", smollm2_path)

    home_default = default_roots({}, home)
    assert ScanRoot("llama.cpp", home / ".cache" / "llama.cpp") in home_default
    assert ScanRoot("ollama", home / ".ollama" / "models") in home_default


def test_split_gguf_is_one_model_and_a_missing_part_is_a_problem(tmp_path):
    folder = tmp_path / "mine"
    parts = tiny_gguf(folder / "whole" / "tiny.gguf", split_parts=3)
    partial = tiny_gguf(folder / "partial" / "half.gguf", split_parts=3)
    partial[1].unlink()

    result = scan(roots=[], extra_dirs=[folder])
    assert_well_formed(result)
    assert [m.name for m in result.models] == [partial[0].name, parts[0].name]
    whole = by_name(result, "tiny-00001-of-00003.gguf")
    assert (whole.path, whole.problem, whole.source) == (parts[0], None, "folder")
    assert whole.size_bytes == sum(p.stat().st_size for p in parts)
    assert whole.n_params == 3 * 32
    assert (whole.architecture, whole.quantization, whole.context_length) == ("llama", "F32", 4096)
    assert whole.has_chat_template is False
    assert ("parts", "3") in whole.details
    assert whole.suggested_id == "tiny-f32"

    half = by_name(result, "half-00001-of-00003.gguf")
    assert half.problem == ("split GGUF incomplete: found 2 of 3 parts; "
                            "missing half-00002-of-00003.gguf")
    assert half.size_bytes == partial[0].stat().st_size + partial[2].stat().st_size
    assert half.n_params == 2 * 32

    # A person typing any part gets the whole model.
    assert inspect_path(parts[2]) == whole


def test_unreadable_files_are_models_with_a_reason(tmp_path, smollm2_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.gguf").write_bytes(smollm2_path.read_bytes()[:65536])
    (bad / "random.gguf").write_bytes(random.Random(7).randbytes(4096))
    (bad / "notes.gguf").write_text("these are my notes, not a model\n")
    (bad / "empty.gguf").write_bytes(b"")
    (bad / "v1.gguf").write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(64))
    (bad / "no-weights").mkdir()
    (bad / "no-weights" / "config.json").write_text('{"model_type": "llama"}')
    (bad / "bad-shard").mkdir()
    (bad / "bad-shard" / "config.json").write_text('{"model_type": "llama"}')
    (bad / "bad-shard" / "model.safetensors").write_bytes(random.Random(3).randbytes(512))

    result = scan(roots=[], extra_dirs=[bad])
    assert_well_formed(result)
    problems = {m.name: m.problem for m in result.models}
    assert problems == {
        "truncated.gguf":
            f"unreadable: {bad / 'truncated.gguf'}: truncated (the header ends early)",
        "random.gguf": f"unreadable: {bad / 'random.gguf'}: not a GGUF file",
        "notes.gguf": f"unreadable: {bad / 'notes.gguf'}: not a GGUF file",
        "empty.gguf": f"unreadable: {bad / 'empty.gguf'}: empty file",
        "v1.gguf": f"unreadable: {bad / 'v1.gguf'}: GGUF version 1 is not supported",
        "no-weights": f"{bad / 'no-weights'} holds no weights",
        "bad-shard": f"unreadable: {bad / 'bad-shard' / 'model.safetensors'}: "
                     "not a safetensors file (header length out of range)",
    }
    assert by_name(result, "truncated.gguf").size_bytes == 65536
    assert by_name(result, "no-weights").format == "checkpoint"


def test_any_bytes_after_the_magic_give_a_problem_never_an_exception(tmp_path, smollm2_path):
    header = smollm2_path.read_bytes()[:2_000_000]
    folder = tmp_path / "fuzz"
    folder.mkdir()
    rng = random.Random(11)
    for i in range(40):
        body = b"GGUF" + (3).to_bytes(4, "little") + rng.randbytes(rng.randrange(0, 2048))
        (folder / f"random-{i:02d}.gguf").write_bytes(body)
        (folder / f"cut-{i:02d}.gguf").write_bytes(header[:rng.randrange(8, 1_000_000)])
    result = scan(roots=[], extra_dirs=[folder])
    assert len(result.models) == 80
    assert all(m.problem and m.problem.startswith(f"unreadable: {m.path}: ") for m in result.models)


def test_walking_survives_loops_sockets_fifos_and_locked_folders(tmp_path, smollm2_path,
                                                                monkeypatch):
    root = tmp_path / "walk"
    place(smollm2_path, root / "models" / SMOL_FILE)
    (root / "loop").mkdir()
    (root / "loop" / "a").symlink_to("..")
    (root / "loop" / "b").symlink_to("a")
    (root / "self").symlink_to("self")
    (root / "dangling.gguf").symlink_to("nowhere.gguf")
    os.mkfifo(root / "pipe.gguf")
    monkeypatch.chdir(root)  # a unix socket's path must be short
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.gguf")
    locked = root / "locked"
    place(smollm2_path, locked / "inside.gguf")
    deep = root.joinpath(*[f"d{i}" for i in range(14)])
    place(smollm2_path, deep / "too-deep.gguf")
    locked.chmod(0)
    try:
        result = scan(roots=[], extra_dirs=[root])
    finally:
        locked.chmod(0o755)
        server.close()

    assert_well_formed(result)
    skipped = "\n".join(result.skipped)
    assert f"{root / 'loop' / 'a'}: folder already visited (symlink loop)" in result.skipped
    assert f"{root / 'loop' / 'b'}: folder already visited (symlink loop)" in result.skipped
    assert f"{root / 'self'}: too many levels of symbolic links" in result.skipped
    assert f"{root / 'dangling.gguf'}: broken symlink" in result.skipped
    assert f"{root / 'pipe.gguf'}: FIFO" in result.skipped
    assert f"{root / 'sock.gguf'}: socket" in result.skipped
    assert "deeper than 12 levels, not searched" in skipped
    names = [m.name for m in result.models]
    assert SMOL_FILE in names and "too-deep.gguf" not in names
    if os.geteuid() == 0:  # chmod does not stop root: the folder is read like any other
        assert "inside.gguf" in names and str(locked) not in skipped
    else:
        assert f"{locked}: permission denied" in result.skipped and "inside.gguf" not in names


def test_a_checkpoint_folder_is_not_entered_and_duplicates_are_listed_once(
        tmp_path, smollm2_path, checkpoint_files):
    hub = tmp_path / "home" / ".cache" / "huggingface" / "hub"
    hf_repo(hub, SMOL_REPO, {SMOL_FILE: smollm2_path})
    mine = tmp_path / "mine"
    checkpoint = mine / "tiny-llama"
    checkpoint.mkdir(parents=True)
    for name, content in checkpoint_files.items():
        (checkpoint / name).write_bytes(content)
    tiny_gguf(checkpoint / "nested" / "hidden.gguf")  # inside a checkpoint: not looked for
    (mine / "link-to-cache").symlink_to(hub)  # the HF blob again, through another root

    result = scan_home({}, tmp_path / "home", extra_dirs=[mine])
    assert_well_formed(result)
    assert [(m.source, m.name) for m in result.models] == [
        ("folder", "tiny-llama"), ("huggingface", f"{SMOL_REPO} · {SMOL_FILE}")]
    found = by_name(result, "tiny-llama")
    assert (found.path, found.architecture, found.n_params) == (checkpoint, "llama", 136)


def test_inspect_path(tmp_path, smollm2_path, checkpoint_files):
    assert_smollm2(inspect_path(smollm2_path), "folder", smollm2_path)
    assert inspect_path(smollm2_path, source="lmstudio").source == "lmstudio"

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name, content in checkpoint_files.items():
        (checkpoint / name).write_bytes(content)
    (checkpoint / "tokenizer_config.json").write_text("{}")
    (checkpoint / "chat_template.jinja").write_text("{{ messages }}")
    model = inspect_path(checkpoint)
    assert (model.format, model.problem, model.has_chat_template) == ("checkpoint", None, True)
    assert (model.context_length, model.quantization, model.n_params) == (2048, "float32", 136)

    missing = tmp_path / "nothing-here.gguf"
    model = inspect_path(missing)
    assert model.problem == f"{missing} does not exist"
    assert (model.format, model.size_bytes, model.suggested_id) == ("gguf", 0, "nothing-here")
    assert inspect_path(tmp_path / "no-dir").problem == f"{tmp_path / 'no-dir'} does not exist"

    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert inspect_path(empty).problem == f"{empty} has no config.json"
    fifo = tmp_path / "typed.gguf"
    os.mkfifo(fifo)
    assert inspect_path(fifo).problem == f"unreadable: {fifo}: a FIFO, not a file"


def test_quantized_checkpoint_and_missing_shards(tmp_path, checkpoint_files):
    folder = tmp_path / "gptq"
    folder.mkdir()
    files = checkpoint_files
    config = json.loads(files["config.json"])
    config.update(quantization_config={"quant_method": "gptq", "bits": 4}, n_positions=1024)
    del config["max_position_embeddings"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model-00001-of-00002.safetensors").write_bytes(files["model.safetensors"])
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    model = inspect_path(folder)
    assert (model.quantization, model.context_length) == ("gptq", 1024)
    assert model.has_chat_template is False
    assert model.problem == f"{folder} checkpoint incomplete: found 1 of 2 shards"


def test_scan_of_a_few_hundred_files(tmp_path, caplog):
    """Header reads only: printed, not asserted (shared CI cores make timings noisy)."""
    template = tiny_gguf(tmp_path / "template.gguf")[0]
    folder = tmp_path / "many"
    for i in range(300):
        place(template, folder / f"group-{i % 30:02d}" / f"model-{i:03d}.Q4_1.gguf")
    start = time.perf_counter()
    with caplog.at_level(logging.DEBUG, logger="chatcore.library.discovery"):
        result = scan(roots=[], extra_dirs=[folder])
    elapsed = time.perf_counter() - start
    print(f"\nscan of 300 small GGUF files in 30 folders: {elapsed * 1000:.0f} ms")
    assert len(result.models) == 300 and result.skipped == ()
    assert all(m.problem is None and m.n_params == 32 for m in result.models)


def test_missing_roots_are_passed_over(tmp_path):
    result = scan(env={}, home=tmp_path / "nobody", extra_dirs=[tmp_path / "absent"])
    assert [m for m in result.models if tmp_path in m.path.parents] == []
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert scan(roots=[ScanRoot("folder", a_file)]).skipped == (f"{a_file}: not a folder",)


def test_a_download_cut_after_its_header_is_unreadable(tmp_path, smollm2_path):
    """The header reads fine; the tensor data it promises are not all there."""
    cut = tmp_path / "interrupted.gguf"
    with smollm2_path.open("rb") as source:
        cut.write_bytes(source.read(smollm2_path.stat().st_size - 50_000_000))
    problem = inspect_path(cut).problem
    assert problem.startswith(f"unreadable: {cut}: truncated: ")
    assert "MB of its tensor data are missing (an interrupted download?)" in problem
    assert inspect_path(smollm2_path).problem is None
