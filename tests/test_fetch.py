"""Fetching the datasets' official files (benchmark.fetch and the sources that use it), without a network.

A local HTTP server on 127.0.0.1, started inside the test, serves copies of the files; `GANBENCH_DATA_MIRROR`
redirects every source's hosts to it. The MNIST test set and PneumoniaMNIST copies in the shared data folder are
bit-exact with the official files, so they pass the real published MD5s. Omniglot's official zips are not on this
machine: its test serves a zip rebuilt from the npz repackaging and puts that zip's MD5 in place of the published one
(the reader itself was checked pixel for pixel against the official images_background_small1.zip, see the README).
Debian's Fashion-MNIST files are recompressed, so their MD5s differ from the official ones: serving them must be
refused, which makes them a real-world corrupted download.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from test_medmnist import PNEUMONIA, needs_pneumonia
from test_workflow import snakemake

import benchmark.fetch
from benchmark.data import get_data_source, prepare_dataset
from benchmark.errors import BenchmarkError
from benchmark.fetch import MIRROR_VARIABLE, OFFLINE_VARIABLE, RemoteFile, ensure_files, hosts
from conftest import FASHION_ROOT, REPO, SHARED, needs_fashion, needs_omniglot, needs_shared_mnist

MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass
class Mirror:
    """What the local server serves (URL path -> bytes), what it was asked for, and bodies it cuts short."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    truncated: set[str] = field(default_factory=set)
    unannounced: set[str] = field(default_factory=set)  # served without Content-Length (the body ends at close)

    def serve(self, collection: str, path: Path, body: bytes | None = None) -> None:
        self.files[f"/{collection}/{path.name}"] = path.read_bytes() if body is None else body


def serving_handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            mirror.requests.append(self.path)
            body = mirror.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            if self.path not in mirror.unannounced:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # A truncated body announces its full length, then the connection closes half-way.
            self.wfile.write(body[: len(body) // 2] if self.path in mirror.truncated else body)

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    state = Mirror(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = serving_handler(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(MIRROR_VARIABLE, state.url)
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    yield state
    server.shutdown()
    server.server_close()


def source_module(name: str) -> ModuleType:
    """The module a registered source was loaded from (plugin discovery loads `datasets/` files by path)."""
    return sys.modules[get_data_source(name).__module__]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


@needs_shared_mnist
def test_mnist_is_fetched_once_verified_and_equal_to_the_shared_copy(mirror, tmp_path, caplog):
    for name in MNIST_FILES:
        mirror.serve("mnist", SHARED / "mnist" / name)
    folder = tmp_path / "mnist"
    with caplog.at_level(logging.INFO, logger="benchmark.fetch"):
        fetched = prepare_dataset("mnist", "mnist_idx", {"root": str(folder)}, 28, 1)
    assert mirror.requests == [f"/mnist/{name}" for name in MNIST_FILES]
    assert leftovers(folder) == sorted(MNIST_FILES)  # no partial download left beside them
    assert "t10k-images-idx3-ubyte.gz (1,648,877 bytes, MD5 verified)" in caplog.text
    shared = prepare_dataset("mnist", "mnist_idx", {"root": str(SHARED / "mnist")}, 28, 1)
    assert fetched.content_sha256 == shared.content_sha256
    assert [item["sha256"] for item in fetched.metadata["source_files"]] == [item["sha256"] for item in shared.metadata["source_files"]]

    prepare_dataset("mnist", "mnist_idx", {"root": str(folder)}, 28, 1)  # once: present files are not fetched again
    assert len(mirror.requests) == 2


@needs_pneumonia
def test_a_download_of_unannounced_size_is_read_to_its_end_and_verified(mirror, tmp_path, caplog):
    mirror.serve("medmnist", PNEUMONIA)
    mirror.unannounced.add("/medmnist/pneumoniamnist.npz")
    with caplog.at_level(logging.INFO, logger="benchmark.fetch"):
        [path] = ensure_files([source_module("medmnist").remote_file("pneumoniamnist")], tmp_path, "MedMNIST")
    assert path.read_bytes() == PNEUMONIA.read_bytes() and "size not announced" in caplog.text


@needs_pneumonia
def test_pneumoniamnist_is_fetched_with_its_published_md5(mirror, tmp_path):
    mirror.serve("medmnist", PNEUMONIA)
    options = {"root": str(tmp_path / "medmnist"), "flag": "pneumoniamnist"}
    fetched = prepare_dataset("xray", "medmnist", options, 28, 1)
    assert mirror.requests == ["/medmnist/pneumoniamnist.npz"]
    shared = prepare_dataset("xray", "medmnist", {"root": str(PNEUMONIA.parent), "flag": "pneumoniamnist"}, 28, 1)
    assert fetched.content_sha256 == shared.content_sha256


def official_style_zip(npz_folder: Path, subset: str) -> bytes:
    """The npz repackaging written back in the official zip's layout: images_<subset>/<alphabet>/<characterNN>/
    <id>_<drawer>.png, 1-bit PNGs with black ink on white."""
    offset = source_module("omniglot").FIRST_ID[subset]
    alphabet_of_id = source_module("omniglot")._read_alphabets(npz_folder / "alphabets.csv")
    with np.load(npz_folder / f"images_{subset}.npz", allow_pickle=False) as archive:
        background = archive["images"]
    buffer = io.BytesIO()
    per_alphabet: dict[str, int] = {}
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for index, drawings in enumerate(background):
            alphabet = alphabet_of_id[index + offset]
            per_alphabet[alphabet] = per_alphabet.get(alphabet, 0) + 1
            for drawer, drawing in enumerate(drawings, start=1):
                png = io.BytesIO()
                Image.fromarray(drawing).convert("1").save(png, format="PNG")
                member = f"images_{subset}/{alphabet}/character{per_alphabet[alphabet]:02d}/{index + offset:04d}_{drawer:02d}.png"
                out.writestr(member, png.getvalue())
    return buffer.getvalue()


@needs_omniglot
def test_omniglot_zip_is_fetched_and_reads_as_the_npz_layout(mirror, tmp_path, monkeypatch):
    body = official_style_zip(SHARED / "omniglot", "evaluation")
    mirror.files["/omniglot/images_evaluation.zip"] = body
    # A rebuilt zip cannot carry the official MD5; the check itself is what the other tests here exercise.
    monkeypatch.setitem(source_module("omniglot").PUBLISHED_MD5, "evaluation", hashlib.md5(body).hexdigest())
    fetched = prepare_dataset("omniglot", "omniglot", {"root": str(tmp_path / "omniglot"), "subsets": ["evaluation"]}, 28, 1)
    assert mirror.requests == ["/omniglot/images_evaluation.zip"]
    assert fetched.metadata["source_files"][0]["path"].endswith("images_evaluation.zip")
    npz = prepare_dataset("omniglot", "omniglot", {"root": str(SHARED / "omniglot"), "subsets": ["evaluation"]}, 28, 1)
    assert npz.metadata["source_files"][0]["path"].endswith("images_evaluation.npz")  # auto picks the npz where present
    assert fetched.content_sha256 == npz.content_sha256
    assert fetched.class_names == npz.class_names and fetched.class_attributes == npz.class_attributes


@needs_shared_mnist
def test_a_corrupted_download_is_refused_and_nothing_is_kept(mirror, tmp_path, monkeypatch):
    """One flipped byte in the served images file. A fetcher that skipped the MD5 check would keep the altered
    file where the next run reads it: shown at the end with the check broken on purpose."""
    mirror.serve("mnist", SHARED / "mnist" / MNIST_FILES[1])
    original = (SHARED / "mnist" / MNIST_FILES[0]).read_bytes()
    mirror.serve("mnist", SHARED / "mnist" / MNIST_FILES[0], original[:-100] + bytes([original[-100] ^ 1]) + original[-99:])
    folder = tmp_path / "mnist"
    with pytest.raises(BenchmarkError) as info:
        prepare_dataset("mnist", "mnist_idx", {"root": str(folder)}, 28, 1)
    message = str(info.value)
    assert f"{mirror.url}/mnist/{MNIST_FILES[0]}" in message and "not the published 9fb629c4189551a2d022fa330f9573f3" in message
    assert str(folder) in message and "nothing was kept" in message
    assert MNIST_FILES[0] not in leftovers(folder) and not any(name.endswith(".partial") for name in leftovers(folder))

    published = source_module("mnist_idx").PUBLISHED_MD5
    real_download = benchmark.fetch._download
    monkeypatch.setattr(benchmark.fetch, "_download", lambda url, path, name: (real_download(url, path, name)[0], published[name]))
    remote = RemoteFile(MNIST_FILES[0], (), published[MNIST_FILES[0]], "mnist")
    ensure_files([remote], folder, "MNIST")  # the broken check lets the altered file through
    assert (folder / MNIST_FILES[0]).read_bytes() != original


@needs_fashion
def test_debian_fashion_files_are_used_in_place_and_refused_as_downloads(mirror, tmp_path):
    """Where the Debian package is installed nothing is fetched. Its files are recompressed, so served as if they
    were the official ones they fail the published MD5 and are refused: a real mismatched download."""
    prepare_dataset("fashion", "fashion_mnist", {"partitions": ["test"], "fetch_root": str(tmp_path / "fm")}, 28, 1)
    assert mirror.requests == []
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        mirror.serve("fashion-mnist", FASHION_ROOT / name)
    options = {"root": str(tmp_path / "no-debian"), "partitions": ["test"], "fetch_root": str(tmp_path / "fm")}
    with pytest.raises(BenchmarkError, match="not the published bef4ecab320f06d8554ea6380940ec79"):
        prepare_dataset("fashion", "fashion_mnist", options, 28, 1)
    assert leftovers(tmp_path / "fm") == []


@needs_shared_mnist
def test_a_download_cut_short_is_refused(mirror, tmp_path):
    for name in MNIST_FILES:
        mirror.serve("mnist", SHARED / "mnist" / name)
    mirror.truncated.add(f"/mnist/{MNIST_FILES[0]}")
    with pytest.raises(BenchmarkError, match="could not fetch t10k-images-idx3-ubyte.gz") as info:
        prepare_dataset("mnist", "mnist_idx", {"root": str(tmp_path)}, 28, 1)
    assert MNIST_FILES[0] not in leftovers(tmp_path)
    assert "IncompleteRead" in str(info.value) or "ended after" in str(info.value)


def test_without_a_network_the_error_names_the_url_and_the_folder(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(MIRROR_VARIABLE, url)
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    folder = tmp_path / "medmnist"
    with pytest.raises(BenchmarkError) as info:
        prepare_dataset("xray", "medmnist", {"root": str(folder), "flag": "pneumoniamnist"}, 28, 1)
    message = str(info.value)
    assert f"{url}/medmnist/pneumoniamnist.npz" in message and str(folder) in message
    assert "copy pneumoniamnist.npz (MD5 28209eda62fecd6e6a2d98b1501bb15f) into" in message
    assert leftovers(folder) == []


def test_offline_mode_refuses_at_once_naming_the_official_url(monkeypatch, tmp_path, mirror):
    monkeypatch.delenv(MIRROR_VARIABLE)
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")
    with pytest.raises(BenchmarkError) as info:
        prepare_dataset("mnist", "mnist_idx", {"root": str(tmp_path)}, 28, 1)
    message = str(info.value)
    assert "http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert mirror.requests == []


def test_an_unwritable_data_folder_is_one_clear_error(mirror, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    remote = RemoteFile("x.bin", ("http://example.invalid/x.bin",), "0" * 32, "things")
    with pytest.raises(BenchmarkError, match="cannot write into the data folder .*a-file/things.*GANBENCH_DATA_ROOT"):
        ensure_files([remote], blocker / "things", "Things")
    assert mirror.requests == []


@needs_shared_mnist
@needs_omniglot
@needs_pneumonia
def test_files_in_the_shared_folder_are_never_fetched(mirror):
    prepare_dataset("mnist", "mnist_idx", {"root": str(SHARED / "mnist")}, 28, 1)
    prepare_dataset("omniglot", "omniglot", {"root": str(SHARED / "omniglot"), "subsets": ["evaluation"]}, 28, 1)
    prepare_dataset("xray", "medmnist", {"root": str(SHARED / "medmnist"), "flag": "pneumoniamnist"}, 28, 1)
    assert mirror.requests == []


def test_hosts_are_the_official_ones_unless_a_mirror_is_set(monkeypatch):
    monkeypatch.delenv(MIRROR_VARIABLE, raising=False)
    assert hosts(source_module("omniglot").remote_zip("background")) == (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
    )
    monkeypatch.setenv(MIRROR_VARIABLE, "http://mirror.example/data/")
    assert hosts(source_module("omniglot").remote_zip("background")) == ("http://mirror.example/data/omniglot/images_background.zip",)


@needs_shared_mnist
@needs_pneumonia
@needs_fashion
def test_the_workflow_fetches_into_an_empty_data_root(mirror, tmp_path):
    """The machine of a user without the shared data folder: the presets' prepare_data jobs fetch what they read
    into $GANBENCH_DATA_ROOT (from the local mirror here) and prepare the same datasets as from the shared files.
    The medical preset goes through the `data` target (every dataset a config reads; Fashion-MNIST from Debian)."""
    for name in MNIST_FILES:
        mirror.serve("mnist", SHARED / "mnist" / name)
    mirror.serve("medmnist", PNEUMONIA)
    data = tmp_path / "data"
    env = {"GANBENCH_DATA_ROOT": str(data), MIRROR_VARIABLE: mirror.url}
    for configfile, target in (("config/config.yaml", "results/data/mnist.npz"), ("config/medical.yaml", "data")):
        result = snakemake(tmp_path / "work", REPO / configfile, target, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "work" / "results" / "data" / "fashion_mnist.npz").is_file()
    assert leftovers(data / "mnist") == sorted(MNIST_FILES) and leftovers(data / "medmnist") == ["pneumoniamnist.npz"]
    expected = {
        "mnist": prepare_dataset("mnist", "mnist_idx", {"root": str(SHARED / "mnist")}, 28, 1).content_sha256,
        "pneumonia": prepare_dataset("x", "medmnist", {"root": str(SHARED / "medmnist"), "flag": "pneumoniamnist"}, 28, 1).content_sha256,
    }
    for dataset, content in expected.items():
        assert json.loads((tmp_path / "work" / "results" / "data" / f"{dataset}.json").read_text())["content_sha256"] == content


def test_data_root_is_the_shared_folder_where_it_exists_else_the_checkouts_data_folder(monkeypatch, tmp_path):
    import benchmark.config

    monkeypatch.delenv("GANBENCH_DATA_ROOT", raising=False)
    monkeypatch.setattr(benchmark.config, "SHARED_DATA", tmp_path / "absent")
    assert benchmark.config.data_root({}) == REPO / "data"  # a fresh clone elsewhere: fetched into the checkout
    monkeypatch.setattr(benchmark.config, "SHARED_DATA", tmp_path)
    assert benchmark.config.data_root({}) == tmp_path
    monkeypatch.setenv("GANBENCH_DATA_ROOT", str(tmp_path / "env"))
    assert benchmark.config.data_root({}) == tmp_path / "env"
    assert benchmark.config.data_root({"data_root": "/configured"}) == Path("/configured")


@needs_shared_mnist
def test_a_host_that_fails_is_followed_by_the_next_one(mirror, monkeypatch, tmp_path):
    """MNIST's official host has refused downloads at times; the next published host then serves the file."""
    monkeypatch.delenv(MIRROR_VARIABLE)
    name = MNIST_FILES[1]
    mirror.serve("mnist", SHARED / "mnist" / name)
    published = source_module("mnist_idx").PUBLISHED_MD5[name]
    remote = RemoteFile(name, (f"{mirror.url}/gone/{name}", f"{mirror.url}/mnist/{name}"), published, "mnist")
    assert ensure_files([remote], tmp_path, "MNIST") == [tmp_path / name]
    assert mirror.requests == [f"/gone/{name}", f"/mnist/{name}"]
    with pytest.raises(BenchmarkError, match=f"{mirror.url}/gone/{name}: HTTP Error 404"):
        ensure_files([RemoteFile("other.gz", (f"{mirror.url}/gone/{name}",), published, "mnist")], tmp_path, "MNIST")
