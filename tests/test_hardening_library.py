"""The model library against a hostile signed-in user and crafted files (hardening issue,
findings 4 and 5): GGUF headers are read within the format's own limits, and only admins
may name paths and folders on the server.

The attack went through the real server: bob (not an admin) signed in, uploaded a crafted
GGUF, and called the Models tab's hidden `fit` handler by number through
/gradio_api/queue/join, and `scan_models` on folders of his choosing. The server tests
below go the same way. The only clock in them is a hang guard: another request must be
answered within 2 s while a bad file is being refused.
"""
from __future__ import annotations

import os
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from gradio_client import Client

from backends.gguf import (
    GGML_MAX_DIMS,
    MAX_ARRAY_DEPTH,
    GGUFHeaderEnds,
    GGUFHeaderError,
    KEPT_LISTS,
    MAX_KEPT_ITEMS,
    read_gguf_layout,
)
from chatcore.generation.registry import load_layered_registry
from chatcore.api.credentials import AUTH_ENV
from chatcore.library.discovery import inspect_path
from chatcore.generation.factory import make_backend
from chatcore.library.fit import WeightsCheck
from chatcore.library.hub import Hub
from chatcore.library.hub_errors import HubError
from chatcore.i18n import english
from chatcore.library.model_library import FilesRefused, ModelLibrary
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatui.library_handlers import LibraryHandlers
from tests.conftest import SHIPPED_MODELS, SMOLLM2_FILE, RunningApp, start_app
from tests.hub_server import HubServer
from tests.page_session import PageSession

FITS_BADGE = '<span class="fit-badge fit-fits">fits</span>'  # a word, coloured by CSS

ALICE, BOB = ("alice", "a1"), ("bob", "b1")  # alice is the admin

ANSWER_WITHIN_S = 2.0  # the hang guard of the issue: another request answered meanwhile
SAFETY_S = 120  # how long a refused request may take on a shared machine: a hang guard
ATTACK_DIMS = 40_000  # the issue's file: 320 KB, 5.4 s of big-number products on old code
BAD_REPO = "mallory/evil-GGUF"
REFUSED = english()("library.files_refused")


# -- crafted files ----------------------------------------------------------------------------
def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def gguf_bytes(kvs: bytes = b"", n_kv: int = 0, tensors: bytes = b"", n_tensors: int = 0,
               tensor_count: int | None = None, kv_count: int | None = None) -> bytes:
    """A GGUF v3 header with `general.architecture = llama` first, then the raw `kvs` and
    `tensors` given; the counts may lie, as a crafted file's do."""
    arch = _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
    counts = struct.pack("<QQ", n_tensors if tensor_count is None else tensor_count,
                         n_kv + 1 if kv_count is None else kv_count)
    return b"GGUF" + struct.pack("<I", 3) + counts + arch + kvs + tensors


def tensor_info(name: str, dims: list[int], kind: int = 0, offset: int = 0) -> bytes:
    return (_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", kind, offset))


def many_dimensions(n_dims: int = ATTACK_DIMS) -> bytes:
    """The issue's file: one tensor of 2^64 - 1 along each of `n_dims` dimensions, so the
    old parser multiplied numbers of millions of bits, once per dimension."""
    return gguf_bytes(tensors=tensor_info("token_embd.weight", [2**64 - 1] * n_dims),
                      n_tensors=1)


def nested_arrays(depth: int) -> bytes:
    """`depth` arrays, each holding the next (the innermost empty)."""
    value = struct.pack("<IQ", 0, 0)  # an empty array of uint8
    for _ in range(depth - 1):
        value = struct.pack("<IQ", 9, 1) + value
    return _string("deep") + struct.pack("<I", 9) + value


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the bounded parser -----------------------------------------------------------------------
def test_the_issues_header_is_refused_naming_the_file_and_the_field(tmp_path):
    bad = write(tmp_path / "model.gguf", many_dimensions())
    with pytest.raises(GGUFHeaderError) as refused:
        read_gguf_layout(bad)
    assert str(refused.value) == (f"model.gguf: tensor 0 has {ATTACK_DIMS} dimensions; GGUF "
                                  f"allows at most {GGML_MAX_DIMS}")
    found = inspect_path(bad)  # what the Models tab shows: the path once, then the field
    assert found.problem == (f"unreadable: {bad}: tensor 0 has {ATTACK_DIMS} dimensions; "
                             "GGUF allows at most 4")


CRAFTED = {
    "five dimensions": (gguf_bytes(tensors=tensor_info("t", [1] * 5), n_tensors=1),
                        GGUFHeaderError, "tensor 0 has 5 dimensions; GGUF allows at most 4"),
    "elements past int64": (gguf_bytes(tensors=tensor_info("t", [2**32, 2**32]), n_tensors=1),
                            GGUFHeaderError, "tensor 0 has 18,446,744,073,709,551,616 "
                            "elements (shape [4294967296, 4294967296]); llama.cpp allows "
                            "at most 2^63 - 1"),
    "a negative dimension": (gguf_bytes(tensors=tensor_info("t", [0, 2**64 - 1]), n_tensors=1),
                             GGUFHeaderError, "tensor 0's dimension 1 is 18,446,744,073,709,551,615; "
                             "llama.cpp allows at most 2^63 - 1"),
    "tensor count": (gguf_bytes(tensor_count=2**64 - 1), GGUFHeaderEnds,
                     "the header declares 18,446,744,073,709,551,615 tensors, but only 53 "
                     "bytes are left in the file (each takes at least 24)"),
    "metadata count": (gguf_bytes(kv_count=2**40), GGUFHeaderEnds,
                       "the header declares 1,099,511,627,776 metadata keys, but only 45 "
                       "bytes are left in the file (each takes at least 13)"),
    "a string's length": (gguf_bytes(_string("general.name")[:0] + struct.pack("<Q", 2**63)
                                     + b"x", n_kv=1),
                          GGUFHeaderEnds, "metadata key 1's name is 9,223,372,036,854,775,808 "
                          "bytes long, but only 1 bytes are left in the file"),
    "an array's length": (gguf_bytes(_string("tokenizer.ggml.scores")
                                     + struct.pack("<IIQ", 9, 6, 2**61), n_kv=1),
                          GGUFHeaderEnds, "metadata 'tokenizer.ggml.scores' declares "
                          "2,305,843,009,213,693,952 items, but only 0 bytes are left"),
    "a string in an array": (gguf_bytes(_string("tokenizer.ggml.tokens")
                                        + struct.pack("<IIQ", 9, 8, 1)
                                        + struct.pack("<Q", 2**62), n_kv=1),
                             GGUFHeaderEnds, "metadata 'tokenizer.ggml.tokens' item 0 is "
                             "longer than the bytes left in the file"),
    "arrays in arrays": (gguf_bytes(nested_arrays(MAX_ARRAY_DEPTH + 1), n_kv=1),
                         GGUFHeaderError, f"metadata 'deep' item 0 item 0 item 0 item 0 nests "
                         f"arrays {MAX_ARRAY_DEPTH + 1} deep; at most {MAX_ARRAY_DEPTH}"),
    "a value type": (gguf_bytes(_string("odd") + struct.pack("<I", 99), n_kv=1),
                     GGUFHeaderError, "metadata 'odd' has unknown value type 99"),
    "the end of the header": (gguf_bytes(tensors=tensor_info("t", [4, 8])[:-3], n_tensors=1),
                              GGUFHeaderEnds, "the file ends inside tensor 0's data offset"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_every_count_and_length_is_checked_before_it_is_used(tmp_path, case):
    data, error, words = CRAFTED[case]
    bad = write(tmp_path / "crafted.gguf", data)
    with pytest.raises(error) as refused:
        read_gguf_layout(bad)
    assert str(refused.value).startswith("crafted.gguf: ") and words in str(refused.value)
    # a count past the bytes there are reads as a header that goes on (the Hub reads more)
    assert isinstance(refused.value, struct.error) == (error is GGUFHeaderEnds)


def test_nested_arrays_within_the_limit_still_read(tmp_path):
    ok = write(tmp_path / "nested.gguf", gguf_bytes(nested_arrays(MAX_ARRAY_DEPTH), n_kv=1))
    metadata, tensors, end = read_gguf_layout(ok)
    assert metadata == {"general.architecture": "llama", "deep": 1} and tensors == []
    assert end == ok.stat().st_size


def tiny_llama(path: Path) -> Path:
    """A small valid GGUF with every kind of metadata the parser skips or keeps."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(16)
    writer.add_head_count(2)
    writer.add_token_list([b"<s>", "é".encode(), b"x" * 300])
    writer.add_token_scores([0.0, -1.5, 2.0])
    writer.add_tags(["text-generation", "conversational"])  # kept as a list
    writer.add_array("llama.nested", [[1, 2], [3]])
    writer.add_bool("llama.flag", True)
    writer.add_float64("llama.rope.scale", 0.25)
    for name, shape in (("token_embd.weight", (3, 16)), ("blk.0.attn_q.weight", (2, 4, 16)),
                        ("output_norm.weight", (16,))):
        writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("which", [pytest.param("smollm2", marks=pytest.mark.slow), "tiny"])
def test_real_and_generated_ggufs_read_as_the_gguf_library_reads_them(which, smollm2_path,
                                                                      tmp_path):
    path = smollm2_path if which == "smollm2" else tiny_llama(tmp_path / "tiny.gguf")
    metadata, tensors, end = read_gguf_layout(path)
    reader = gguf.GGUFReader(path)
    assert [(t.name, int(t.n_elements), int(t.tensor_type), int(t.data_offset) - reader.data_offset)
            for t in reader.tensors] == [(n, c, k, o) for n, c, k, o in tensors]
    assert end <= reader.data_offset < end + 32  # the header ends where the padding starts
    fields = {name: f for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    assert set(fields) == set(metadata)
    for name, field in fields.items():
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            length = int(field.parts[4][0])  # key length, key, type, item type, length
            kept = name in KEPT_LISTS and length <= MAX_KEPT_ITEMS  # general.tags, as a list
            assert metadata[name] == (field.contents() if kept else length), name
        else:
            assert metadata[name] == field.contents(), name


# -- the Hub's fit check reads the downloaded bytes with the same parser ------------------
@pytest.fixture()
def evil_hub(tmp_path, monkeypatch) -> Iterator[HubServer]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    write(tmp_path / "hub" / BAD_REPO / "bad.gguf", many_dimensions())
    with HubServer(tmp_path / "hub") as server:
        yield server


def test_the_hubs_fit_check_refuses_the_crafted_header(evil_hub, tmp_path):
    hub = Hub(endpoint=evil_hub.endpoint, token=False, timeout=30, cache_dir=tmp_path / "c")
    with pytest.raises(HubError, match=f"bad.gguf: tensor 0 has {ATTACK_DIMS} dimensions; "
                                       "GGUF allows at most 4"):
        hub.gguf_header(BAD_REPO, "bad.gguf")
    library = make_library(tmp_path, admins=["alice"], hub=hub)
    shown = LibraryHandlers(library, texts=english()).hub_fit(BAD_REPO, "bad.gguf", None)
    assert shown.startswith("⚠️ Reading the GGUF header of bad.gguf in mallory/evil-GGUF "
                            "failed: ") and f"{ATTACK_DIMS} dimensions" in shown


# -- who may look at files on the server, in the library ------------------------------------
def make_library(tmp_path: Path, admins=None, hub: Hub | None = None,
                 models_dir: Path | None = None) -> ModelLibrary:
    personal = tmp_path / "data" / "models.yaml"
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), make_backend,
                           budget=MemoryBudget({"cpu": 8 * 10**9}), weights_check=WeightsCheck())
    return ModelLibrary(manager, SHIPPED_MODELS, personal, admins=admins, hub=hub, env={},
                        home=tmp_path / "home", scan_dirs=[models_dir] if models_dir else ())


class Request:
    """What gradio hands a handler under --auth."""

    def __init__(self, username: str) -> None:
        self.username = username


def linked(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem: a copy
        shutil.copyfile(source, target)
    return target


def test_only_admins_name_paths_and_others_get_one_refusal(tmp_path, smollm2_path):
    models = tmp_path / "models"
    linked(smollm2_path, models / SMOLLM2_FILE)
    library = make_library(tmp_path, admins=["alice"], models_dir=models)
    handlers = LibraryHandlers(library, texts=english())
    bob, alice = Request("bob"), Request("alice")
    missing = tmp_path / "no-such-file"
    probes = ["/etc/shadow", str(missing), str(models / SMOLLM2_FILE), "/etc"]
    assert {handlers.fit(p, None, bob) for p in probes} == {REFUSED}
    assert {handlers.scan(p, bob)[2] for p in probes} == {REFUSED}
    for path in probes:
        with pytest.raises(FilesRefused):
            library.scan([Path(path)], user="bob")
        with pytest.raises(FilesRefused):
            library.find(path, user="bob")
    # bob's own scan of the configured folders, and the badges of what it found
    [row], choices, note = handlers.scan("", bob)
    assert note == "Found 1 model." and row[0] == choices["value"] and row[8] == FITS_BADGE
    assert handlers.fit(choices["value"], None, bob).startswith(f"**{FITS_BADGE}**")
    # alice still looks anywhere, and a path that is not there says so
    assert "no such file or folder" in handlers.fit(str(missing), None, alice)
    assert handlers.fit(str(models / SMOLLM2_FILE), None, alice).startswith(f"**{FITS_BADGE}**")
    assert handlers.scan(str(tmp_path), alice)[2].startswith("Found")
    assert "not a folder" in handlers.scan(str(missing), alice)[2]


def test_one_users_scan_does_not_change_the_ids_another_picks_from(tmp_path, smollm2_path):
    extra = tmp_path / "alices-folder"
    linked(smollm2_path, extra / "tiny-assistant.Q4_1.gguf")
    library = make_library(tmp_path, admins=["alice"])
    found = library.scan([extra], user="alice").models
    library.scan(user="bob")  # bob's scan of the configured folders, which hold nothing
    assert library.find(found[0].scan_id, user="alice").path == found[0].path
    with pytest.raises(FilesRefused):  # alice's folder is not bob's to look at
        library.find(found[0].scan_id, user="bob")


# -- through the real server, as the attack went -------------------------------------------
@pytest.fixture(scope="module")
def evil_files(tmp_path_factory, smollm2_path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hardening")
    models = root / "models"
    linked(smollm2_path, models / SMOLLM2_FILE)
    bad = write(models / "evil.Q4_0.gguf", many_dimensions())
    write(root / "hub" / BAD_REPO / "bad.gguf", many_dimensions())
    return {"root": root, "models": models, "bad": bad}


@pytest.fixture(scope="module")
def two_users(evil_files) -> Iterator[RunningApp]:
    root = evil_files["root"]
    with HubServer(root / "hub") as hub:
        # The users come from the environment, as $LOCAL_CHAT_AUTH gives them.
        app = start_app(["--admins", "alice", "--models", str(SHIPPED_MODELS), "--data-dir",
                         str(root / "data"), "--models-dir", str(evil_files["models"]),
                         "--allow-download"],
                        env={"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(root / "cache"),
                             "HF_HUB_OFFLINE": "0",
                             AUTH_ENV: f"{ALICE[0]}:{ALICE[1]},{BOB[0]}:{BOB[1]}"})
        yield app
        app.stop()


def row_of(table: dict, filename: str) -> list:
    """The scan table's row of the file named `filename`."""
    return next(row for row in table["data"] if row[2].endswith(filename))


def answered_meanwhile(app: RunningApp, call) -> tuple[object, int]:
    """`call()`'s result, and the status of /v1/models asked while `call` runs: httpx
    raises if the server does not answer within the hang guard."""
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("result", call()))
    worker.start()
    other = httpx.get(f"{app.url}v1/models", auth=ALICE, timeout=ANSWER_WITHIN_S)
    worker.join(SAFETY_S)
    assert not worker.is_alive() and "result" in outcome, "the refused request hung"
    return outcome["result"], other.status_code


@pytest.mark.slow
def test_finding_4_crafted_headers_are_refused_and_the_server_keeps_answering(
        two_users, evil_files):
    bob, alice = PageSession(two_users.url, BOB), PageSession(two_users.url, ALICE)
    client = Client(two_users.url, auth=BOB, verbose=False)
    words = f"tensor 0 has {ATTACK_DIMS} dimensions; GGUF allows at most 4"
    # bob scans the configured folders (a shared models folder someone dropped it in)
    (table, candidates, note), status = answered_meanwhile(
        two_users, lambda: client.predict("", api_name="/scan_models"))
    assert status == 200
    evil = row_of(table, "evil.Q4_0.gguf")
    assert evil[9] == f"unreadable: {evil_files['bad']}: {words}", table
    # bob's hidden fit handler, by number, on the scan id of the bad file
    fit = bob.handler(writes="add-fit")
    shown, status = answered_meanwhile(two_users, lambda: bob.call(fit, evil[0], None))
    assert status == 200 and shown == [f"⚠️ unreadable: {evil_files['bad']}: {words}"], shown
    # the Hub's fit check, on a file of a repo bob searched for and picked
    page = bob.new_page()
    bob.call(bob.handler(writes="hub-repo"), "evil", "gguf", "", "", page=page)
    bob.call(bob.handler(writes="hub-file"), BAD_REPO, page=page)
    hub_fit = bob.handler(writes="hub-fit")
    shown, status = answered_meanwhile(
        two_users, lambda: bob.call(hub_fit, BAD_REPO, "bad.gguf", None, page=page))
    assert status == 200 and shown[0].startswith("⚠️ Reading the GGUF header of bad.gguf")
    assert words in shown[0], shown
    # bob's upload is not his to fit; alice's fit of it refuses the header
    uploaded = bob.upload(evil_files["bad"].name, evil_files["bad"].read_bytes())
    assert bob.call(fit, uploaded, None) == [REFUSED]
    shown, status = answered_meanwhile(two_users, lambda: alice.call(fit, uploaded, None))
    assert status == 200 and words in shown[0], shown


@pytest.mark.slow
def test_finding_5_bob_cannot_probe_the_servers_files_and_alice_still_can(
        two_users, evil_files):
    bob, alice = PageSession(two_users.url, BOB), PageSession(two_users.url, ALICE)
    client = Client(two_users.url, auth=BOB, verbose=False)
    fit = bob.handler(writes="add-fit")
    missing = "/root/.no-such-history"
    answers = {path: bob.call(fit, path, None)[0]
               for path in ("/etc/shadow", missing, "/etc", str(evil_files["models"]))}
    assert set(answers.values()) == {REFUSED}, answers
    for folder in ("/etc", "/", missing, str(evil_files["root"])):
        assert client.predict(folder, api_name="/scan_models")[2] == REFUSED, folder
    # what the page needs still works for bob: a scan of the model folders and its badges
    table, candidates, _ = client.predict("", api_name="/scan_models")
    smol = row_of(table, SMOLLM2_FILE)
    assert smol[8] == FITS_BADGE and bob.call(fit, smol[0], None)[0].startswith(f"**{FITS_BADGE}**")
    # alice, an admin, still looks anywhere, and is told what is there
    shadow, gone = alice.call(fit, "/etc/shadow", None)[0], alice.call(fit, missing, None)[0]
    assert shadow != gone and "no such file or folder" in gone, (shadow, gone)
    admin = Client(two_users.url, auth=ALICE, verbose=False)
    assert admin.predict(str(evil_files["models"]), api_name="/scan_models")[2].startswith(
        "Found")
