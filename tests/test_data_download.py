"""lamina.data: named sets downloaded from a local HTTP server, CIFAR parsing, tfds."""

import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import sys
import tarfile
import threading
import time
import types

import numpy as np
import pytest

import lamina.data as ld
from lamina.data import download, named

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_gz(arr):
    arr = np.asarray(arr, np.uint8)
    raw = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    return gzip.compress(raw)


@pytest.fixture
def tiny_mnist():
    rng = np.random.default_rng(3)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (6, 5, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.array([0, 1, 2, 3, 4, 9], np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 5, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.array([7, 8, 9], np.uint8),
    }
    blobs = {name: idx_gz(arr) for name, arr in arrays.items()}
    return arrays, blobs


def use_checksums(monkeypatch, name, blobs, sha=None):
    for filename, blob in blobs.items():
        digest = sha if sha is not None else hashlib.sha256(blob).hexdigest()
        monkeypatch.setitem(named.CHECKSUMS, f"{name}/{filename}", (digest, len(blob)))


class Server:
    """A local HTTP server (port 0) serving {url path: bytes}; counts requests."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []
        self.sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if self.path.startswith("/endless/"):
                    # No Content-Length: the body ends when the connection closes. Bounded (32 MiB).
                    self.send_response(200)
                    self.end_headers()
                    self.close_connection = True
                    try:
                        while outer.sent < (32 << 20):
                            self.wfile.write(body)
                            outer.sent += len(body)
                    except OSError:  # the client hung up
                        pass
                    return
                if self.path.startswith("/stall/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(3)  # then nothing more: the client must time out first
                    self.close_connection = True
                    return
                if self.path.startswith("/short/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) + 1000))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers = []

    def start(files):
        s = Server(files)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LAMINA_DATA_URL", raising=False)
    monkeypatch.delenv("LAMINA_DATA_TIMEOUT", raising=False)
    monkeypatch.setenv("LAMINA_DATA_DIR", str(tmp_path / "env-cache"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_verify_then_reuse_cache(tmp_path, monkeypatch, serve, tiny_mnist):
    arrays, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    server = serve({f"/mirror/{k}": v for k, v in blobs.items()})
    cache = tmp_path / "cache"
    ds = ld.load("mnist", cache_dir=str(cache), base_url=server.url + "mirror")
    assert sorted(server.requests) == sorted(f"/mirror/{k}" for k in IDX_FILES)
    assert leftovers(cache / "mnist") == sorted(IDX_FILES)
    assert ds.name == "mnist" and ds.input_shape == (5, 5, 1) and ds.num_classes == 10
    assert ds.splits == {"train": 6, "test": 3}
    x, y = next(iter(ds.batches("test", 3)))
    np.testing.assert_allclose(x.numpy()[..., 0], arrays["t10k-images-idx3-ubyte.gz"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), [7, 8, 9])
    for name in IDX_FILES:
        assert (cache / "mnist" / name).read_bytes() == blobs[name]
    # second load: served from the cache, no request (even with a dead mirror)
    again = ld.load("mnist", cache_dir=str(cache), base_url=f"http://127.0.0.1:{free_port()}/")
    assert len(server.requests) == 4
    np.testing.assert_array_equal(again.arrays("train")[0], ds.arrays("train")[0])


def test_env_vars_pick_mirror_and_cache(tmp_path, monkeypatch, serve, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "fashion_mnist", blobs)
    server = serve({f"/sets/fashion_mnist/{k}": v for k, v in blobs.items()})
    monkeypatch.setenv("LAMINA_DATA_URL", server.url + "sets/{name}/")
    ds = ld.load("fashion_mnist")
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert leftovers(tmp_path / "env-cache" / "fashion_mnist") == sorted(IDX_FILES)
    assert ld.dataset_folder("fashion_mnist") == str(tmp_path / "env-cache" / "fashion_mnist")


def test_unknown_checksum_still_parses(tmp_path, monkeypatch, serve, tiny_mnist):
    _, blobs = tiny_mnist
    for k in blobs:
        monkeypatch.setitem(named.CHECKSUMS, f"mnist/{k}", (None, None))
    server = serve({f"/{k}": v for k, v in blobs.items()})
    ds = ld.load("mnist", cache_dir=str(tmp_path / "c"), base_url=server.url)
    assert ds.splits == {"train": 6, "test": 3}


def test_wrong_checksum_leaves_nothing_behind(tmp_path, monkeypatch, serve, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    monkeypatch.setitem(named.CHECKSUMS, "mnist/train-images-idx3-ubyte.gz", ("0" * 64, None))
    server = serve({f"/{k}": v for k, v in blobs.items()})
    cache = tmp_path / "c"
    with pytest.raises(ld.DataError, match=r"train-images-idx3-ubyte\.gz: download from .* failed verification: SHA256 hash .* expected sha256:0{64} but got [0-9a-f]{64}; discarded"):
        ld.load("mnist", cache_dir=str(cache), base_url=server.url)
    assert leftovers(cache / "mnist") == []
    # a wrong size is refused the same way
    monkeypatch.setitem(named.CHECKSUMS, "mnist/train-images-idx3-ubyte.gz", (None, 12345))
    with pytest.raises(ld.DataError, match=r"has \d+ bytes, expected 12345"):
        ld.load("mnist", cache_dir=str(cache), base_url=server.url)
    assert all(not n.endswith(".part") for n in leftovers(cache / "mnist"))
    assert "train-images-idx3-ubyte.gz" not in leftovers(cache / "mnist")


def test_corrupt_cached_file_is_reported_not_replaced(tmp_path, monkeypatch, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    folder = tmp_path / "c" / "mnist"
    folder.mkdir(parents=True)
    for k, v in blobs.items():
        (folder / k).write_bytes(v)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(ld.DataError, match=r"t10k-labels-idx1-ubyte\.gz: size mismatch.*delete it to download it again"):
        ld.load("mnist", cache_dir=str(tmp_path / "c"), base_url="http://127.0.0.1:9/")
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == b"garbage"


def test_connection_refused_fails_fast_with_manual_instructions(tmp_path, monkeypatch, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    cache = tmp_path / "c"
    start = time.monotonic()
    with pytest.raises(ld.DataError) as info:
        ld.load("mnist", cache_dir=str(cache), base_url=f"http://127.0.0.1:{free_port()}/")
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "cannot reach the server" in msg and "\n" not in msg
    assert str(cache / "mnist") in msg
    for name in IDX_FILES:
        assert name in msg
    assert leftovers(cache / "mnist") == []


def test_stalled_server_times_out(tmp_path, monkeypatch, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    monkeypatch.setattr(download, "READ_TIMEOUT", 0.5)
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog but nobody ever answers
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ld.DataError, match=r"timed out: no data for 0\.5 s; to install by hand"):
            ld.load("mnist", cache_dir=str(tmp_path / "c"), base_url=f"http://127.0.0.1:{port}/")
        assert time.monotonic() - start < 5
    finally:
        listener.close()
    assert leftovers(tmp_path / "c" / "mnist") == []


def test_timeout_env_var(monkeypatch):
    monkeypatch.setenv("LAMINA_DATA_TIMEOUT", "2.5")
    assert download.read_timeout() == 2.5
    monkeypatch.setenv("LAMINA_DATA_TIMEOUT", "soon")
    with pytest.raises(ld.DataError, match="LAMINA_DATA_TIMEOUT"):
        download.read_timeout()


def test_http_error_and_short_body(tmp_path, serve):
    server = serve({"/short/f.bin": b"x" * 100})
    dest = tmp_path / "d" / "f.bin"
    with pytest.raises(ld.DataError, match=r"missing\.bin: HTTP 404"):
        download.fetch(server.url + "missing.bin", str(dest))
    with pytest.raises(ld.DataError, match=r"cannot download .*short/f\.bin"):
        download.fetch(server.url + "short/f.bin", str(dest))
    assert leftovers(tmp_path / "d") == []


def test_oversized_download_is_stopped_early(tmp_path, serve):
    server = serve({"/endless/f.bin": b"y" * 65536})
    dest = tmp_path / "d" / "f.bin"
    start = time.monotonic()
    with pytest.raises(ld.DataError, match=r"f\.bin: download from .*endless/f\.bin: more than the expected 1000 bytes arrived; stopped"):
        download.fetch(server.url + "endless/f.bin", str(dest), size=1000, read_timeout_s=5)
    assert time.monotonic() - start < 10
    time.sleep(0.2)
    # stopped after the first chunk or so, not after the server's 32 MiB (the old check ran at the end)
    assert server.sent < (8 << 20)
    assert leftovers(tmp_path / "d") == []


def test_stall_in_the_middle_of_the_body_times_out(tmp_path, serve):
    server = serve({"/stall/f.bin": b"z" * 200_000})
    dest = tmp_path / "d" / "f.bin"
    start = time.monotonic()
    with pytest.raises(ld.DataError, match=r"timed out: no data for 0\.5 s"):
        download.fetch(server.url + "stall/f.bin", str(dest), read_timeout_s=0.5)
    assert time.monotonic() - start < 2.5  # the server stalls for 3 s
    assert leftovers(tmp_path / "d") == []


def test_fetch_keeps_a_verified_file_and_replaces_a_corrupt_one(tmp_path, serve):
    blob = b"lamina" * 1000
    sha = hashlib.sha256(blob).hexdigest()
    server = serve({"/f.bin": blob})
    dest = tmp_path / "d" / "f.bin"
    download.fetch(server.url + "f.bin", str(dest), sha256=sha, size=len(blob), progress=True)
    assert dest.read_bytes() == blob and len(server.requests) == 1
    download.fetch(server.url + "f.bin", str(dest), sha256=sha, size=len(blob))
    assert len(server.requests) == 1  # cached: no request
    dest.write_bytes(b"corrupt")
    download.fetch(server.url + "f.bin", str(dest), sha256=sha)
    assert dest.read_bytes() == blob and len(server.requests) == 2
    dest.write_bytes(b"corrupt")
    download.fetch(server.url + "f.bin", str(dest), size=len(blob))  # no hash: the size decides
    assert dest.read_bytes() == blob and len(server.requests) == 3
    assert leftovers(tmp_path / "d") == ["f.bin"]


def test_missing_file_url(tmp_path):
    with pytest.raises(ld.DataError, match=r"cannot download file://.*nothing\.bin to .*: No such file"):
        download.fetch((tmp_path / "nothing.bin").as_uri(), str(tmp_path / "d" / "f.bin"))
    assert leftovers(tmp_path / "d") == []


def _cifar_record(label_bytes, image):
    planes = np.transpose(image, (2, 0, 1)).reshape(-1)
    return bytes(label_bytes) + planes.astype(np.uint8).tobytes()


def _tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cifar10_binary_placed_by_hand(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    members = {}
    for b in range(5):
        members[f"cifar-10-batches-bin/data_batch_{b + 1}.bin"] = b"".join(
            _cifar_record([labels[i]], images[i]) for i in (2 * b, 2 * b + 1)
        )
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(_cifar_record([labels[i]], images[i]) for i in (10, 11))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
    blob = _tar_gz(members)
    folder = tmp_path / "c" / "cifar10"
    folder.mkdir(parents=True)
    (folder / "cifar-10-binary.tar.gz").write_bytes(blob)
    monkeypatch.setitem(named.CHECKSUMS, "cifar10/cifar-10-binary.tar.gz", (hashlib.sha256(blob).hexdigest(), len(blob)))
    ds = ld.load("cifar10", cache_dir=str(tmp_path / "c"), base_url="http://127.0.0.1:9/")
    assert ds.class_names == names and ds.input_shape == (32, 32, 3)
    assert ds.splits == {"train": 10, "test": 2}
    np.testing.assert_array_equal(ds.arrays("train")[0], images[:10])
    np.testing.assert_array_equal(ds.arrays("train")[1], labels[:10])
    np.testing.assert_array_equal(ds.arrays("test")[0], images[10:])
    xb, _ = next(iter(ds.batches("test", 2)))
    np.testing.assert_allclose(xb.numpy(), images[10:] / 255.0, atol=1e-7)


def test_cifar100_fine_labels_and_truncated_batch(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    members = {
        "cifar-100-binary/train.bin": _cifar_record([1, 77], images[0]) + _cifar_record([2, 5], images[1]),
        "cifar-100-binary/test.bin": _cifar_record([3, 99], images[2]),
        "cifar-100-binary/fine_label_names.txt": "\n".join(f"c{i}" for i in range(100)).encode(),
    }
    folder = tmp_path / "c" / "cifar100"
    folder.mkdir(parents=True)
    blob = _tar_gz(members)
    (folder / "cifar-100-binary.tar.gz").write_bytes(blob)
    monkeypatch.setitem(named.CHECKSUMS, "cifar100/cifar-100-binary.tar.gz", (None, None))
    ds = ld.load("cifar100", cache_dir=str(tmp_path / "c"))
    assert ds.num_classes == 100 and ds.class_names[77] == "c77"
    np.testing.assert_array_equal(ds.arrays("train")[1], [77, 5])
    np.testing.assert_array_equal(ds.arrays("test")[0], images[2:])
    members["cifar-100-binary/test.bin"] = members["cifar-100-binary/test.bin"][:-1]
    (folder / "cifar-100-binary.tar.gz").write_bytes(_tar_gz(members))
    with pytest.raises(ld.DataError, match=r"test\.bin: truncated CIFAR batch"):
        ld.load("cifar100", cache_dir=str(tmp_path / "c"))
    (folder / "cifar-100-binary.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ld.DataError, match=r"cifar-100-binary\.tar\.gz: corrupt or truncated archive"):
        ld.load("cifar100", cache_dir=str(tmp_path / "c"))


def test_tfds_not_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises ImportError
    with pytest.raises(ld.DataError, match=r"tfds:mnist: tensorflow-datasets is not installed; pip install tensorflow-datasets and place the prepared data in .*tfdata"):
        ld.load("tfds:mnist", cache_dir=str(tmp_path / "tfdata"))


def test_tfds_conversion_with_a_stand_in_module(monkeypatch, tmp_path):
    x = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4, 1)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    calls = {}

    def load(name, **kwargs):
        calls.update(kwargs, name=name)
        if name == "missing":
            raise AssertionError("Dataset missing: could not find data in /nowhere.")
        info = types.SimpleNamespace(
            supervised_keys=("image", "label"),
            features={"label": types.SimpleNamespace(names=["a", "b", "c"], num_classes=3)},
        )
        return {"train": (x, y), "validation": (x[:2], y[:2])}, info

    fake = types.SimpleNamespace(load=load, as_numpy=lambda d: d)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    ds = ld.load("tfds:toy", cache_dir=str(tmp_path))
    assert calls["download"] is False and calls["data_dir"] == str(tmp_path)
    assert ds.name == "tfds:toy" and ds.class_names == ["a", "b", "c"]
    assert ds.splits == {"train": 8, "validation": 2, "test": 2}
    assert ds.preprocessing["scale"] == pytest.approx(1 / 255)
    with pytest.raises(ld.DataError, match=r"tfds:missing: cannot load prepared data from .*prepare it first"):
        ld.load("tfds:missing", cache_dir=str(tmp_path))


def test_file_url_mirror(tmp_path, monkeypatch, tiny_mnist):
    _, blobs = tiny_mnist
    use_checksums(monkeypatch, "mnist", blobs)
    mirror = tmp_path / "mirror" / "mnist"
    mirror.mkdir(parents=True)
    for k, v in blobs.items():
        (mirror / k).write_bytes(v)
    monkeypatch.setenv("LAMINA_DATA_URL", (tmp_path / "mirror").as_uri() + "/{name}")
    ds = ld.load("mnist")
    assert ds.splits == {"train": 6, "test": 3}
    assert leftovers(tmp_path / "env-cache" / "mnist") == sorted(IDX_FILES)
