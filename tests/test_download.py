"""Downloads against a local HTTP server on 127.0.0.1 (never the network) and zip extraction."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from glove_exp.core.errors import EmbeddingsError
from glove_exp.io.download import download, extract_member
from tests.test_vectors import temp_names

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, not all-equal so offsets matter


@dataclass
class Server:
    """In-memory files served by path, with switchable misbehaviour and a request log."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    truncate: bool = False  # promise the full Content-Length, send half, close
    ignore_range: bool = False  # always answer 200 with the whole body
    redirect_to: str | None = None  # answer every request with 302 to this URL

    def url(self, path: str) -> str:
        return self.base + path


def _handler(state: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.requests.append((self.path, dict(self.headers.items())))
            self.close_connection = True
            if state.redirect_to:
                self.send_response(302)
                self.send_header("Location", state.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match.group(1)) if match and not state.ignore_range else 0
            if match and not state.ignore_range:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            self.wfile.write(chunk[: len(chunk) // 2] if state.truncate else chunk)
            self.wfile.flush()

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def server():
    state = Server(files={"/glove.zip": PAYLOAD})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# ---------------------------------------------------------------- download


def test_download_happy_path_then_cached(server, tmp_path):
    dest = tmp_path / "sub" / "glove.zip"
    assert download(server.url("/glove.zip"), dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert len(server.requests) == 1
    assert "Range" not in server.requests[0][1]

    assert download(server.url("/glove.zip"), dest, progress=False) == dest
    assert len(server.requests) == 1  # no second request
    assert dest.read_bytes() == PAYLOAD


def test_download_correct_sha256(server, tmp_path):
    dest = tmp_path / "glove.zip"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    download(server.url("/glove.zip"), dest, sha256=f"  {digest.upper()} ", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_download_wrong_sha256_deletes_everything(server, tmp_path):
    dest = tmp_path / "glove.zip"
    with pytest.raises(EmbeddingsError, match="checksum"):
        download(server.url("/glove.zip"), dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not _part(dest).exists()


def test_download_truncated_body(server, tmp_path):
    server.truncate = True
    dest = tmp_path / "glove.zip"
    with pytest.raises(EmbeddingsError, match="incomplete|interrupted"):
        download(server.url("/glove.zip"), dest, progress=False)
    assert not dest.exists()


def test_download_resumes_with_range(server, tmp_path):
    dest = tmp_path / "glove.zip"
    half = len(PAYLOAD) // 2
    _part(dest).write_bytes(PAYLOAD[:half])
    download(server.url("/glove.zip"), dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert len(server.requests) == 1
    assert server.requests[0][1].get("Range") == f"bytes={half}-"
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "glove.zip"
    half = len(PAYLOAD) // 2
    _part(dest).write_bytes(b"x" * half)  # stale bytes that must not survive
    download(server.url("/glove.zip"), dest, progress=False)
    assert server.requests[0][1].get("Range") == f"bytes={half}-"
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


@pytest.mark.parametrize("url", ["http://example.com/x.zip", "ftp://127.0.0.1/x.zip", "ftp://example.com/x.zip"])
def test_download_refuses_non_https(server, tmp_path, url):
    dest = tmp_path / "x.zip"
    with pytest.raises(EmbeddingsError, match="https"):
        download(url, dest, progress=False)
    assert server.requests == []
    assert not dest.exists()
    assert not _part(dest).exists()


def test_download_refuses_redirect_off_loopback(server, tmp_path):
    server.redirect_to = "http://example.com/glove.zip"
    dest = tmp_path / "glove.zip"
    with pytest.raises(EmbeddingsError, match="https") as excinfo:
        download(server.url("/glove.zip"), dest, progress=False)
    assert "http://example.com/glove.zip" in str(excinfo.value)
    assert len(server.requests) == 1
    assert not dest.exists()


def test_download_404(server, tmp_path):
    dest = tmp_path / "missing.zip"
    with pytest.raises(EmbeddingsError, match="HTTP 404"):
        download(server.url("/missing.zip"), dest, progress=False)
    assert not dest.exists()


def test_download_unreachable(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed now: connecting is refused at once
    dest = tmp_path / "glove.zip"
    with pytest.raises(EmbeddingsError, match="embeddings.path") as excinfo:
        download(f"http://127.0.0.1:{port}/glove.zip", dest, progress=False)
    assert "\n" not in str(excinfo.value)
    assert not dest.exists()


# ---------------------------------------------------------------- extract_member

TEXT = b"the 0.1 0.2\nof 0.3 0.4\n" * 500


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extract_member_happy_path(tmp_path):
    zip_path = _zip(tmp_path / "g.zip", {"glove.6B.50d.txt": TEXT, "other.txt": b"x"})
    out = tmp_path / "out"
    target = extract_member(zip_path, "glove.6B.50d.txt", out, progress=False)
    assert target == out / "glove.6B.50d.txt"
    assert target.read_bytes() == TEXT
    assert sorted(p.name for p in out.iterdir()) == ["glove.6B.50d.txt"]  # no temp file left
    assert zip_path.exists()


def test_extract_member_deletes_temporaries_of_dead_extractions_only(tmp_path):
    zip_path = _zip(tmp_path / "g.zip", {"glove.6B.50d.txt": TEXT})
    out = tmp_path / "out"
    temps = temp_names(out / "glove.840B.300d.txt")  # any member's leftovers in the folder
    out.mkdir()
    for temp in temps.values():
        temp.write_bytes(TEXT)
    (out / "glove.zip.part").write_bytes(b"resumable")  # not a temporary: downloads resume from it
    extract_member(zip_path, "glove.6B.50d.txt", out, progress=False)
    assert not temps["dead"].exists()
    assert temps["live"].exists() and temps["other_host"].exists() and (out / "glove.zip.part").exists()


def test_extract_member_refuses_parent_dir(tmp_path):
    zip_path = _zip(tmp_path / "evil.zip", {"../evil.txt": b"pwned"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(EmbeddingsError, match="refusing"):
        extract_member(zip_path, "../evil.txt", out, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert list(out.iterdir()) == []


def test_extract_member_refuses_absolute(tmp_path):
    zip_path = _zip(tmp_path / "abs.zip", {"etc/x": b"pwned"})
    out = tmp_path / "out"
    with pytest.raises(EmbeddingsError, match="refusing"):
        extract_member(zip_path, "/etc/x", out, progress=False)
    assert not out.exists()


def test_extract_member_missing_lists_members(tmp_path):
    zip_path = _zip(tmp_path / "g.zip", {"a.txt": b"a", "b.txt": b"b"})
    out = tmp_path / "out"
    with pytest.raises(EmbeddingsError, match="a.txt, b.txt") as excinfo:
        extract_member(zip_path, "glove.6B.50d.txt", out, progress=False)
    assert "glove.6B.50d.txt" in str(excinfo.value)
    assert zip_path.exists()  # the zip is fine, only the name is wrong
    assert not (out / "glove.6B.50d.txt").exists()


def test_extract_member_truncated_zip_is_deleted(tmp_path):
    zip_path = _zip(tmp_path / "g.zip", {"glove.6B.50d.txt": TEXT})
    data = zip_path.read_bytes()
    zip_path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(EmbeddingsError, match="corrupt"):
        extract_member(zip_path, "glove.6B.50d.txt", out, progress=False)
    assert not zip_path.exists()
    assert not (out / "glove.6B.50d.txt").exists()


def test_extract_member_bad_crc_is_deleted(tmp_path):
    # Stored (uncompressed) so that flipped bytes decode fine and only the CRC check can catch them.
    zip_path = _zip(tmp_path / "g.zip", {"glove.6B.50d.txt": TEXT}, compression=zipfile.ZIP_STORED)
    with zipfile.ZipFile(zip_path) as archive:
        info = archive.getinfo("glove.6B.50d.txt")
    data = bytearray(zip_path.read_bytes())
    # local header: 30 fixed bytes + name + extra field, then the member data
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + info.compress_size // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(EmbeddingsError, match="corrupt") as excinfo:
        extract_member(zip_path, "glove.6B.50d.txt", out, progress=False)
    assert "CRC" in str(excinfo.value)
    assert not zip_path.exists()
    assert not (out / "glove.6B.50d.txt").exists()
    assert list(out.iterdir()) == []  # the temporary file was removed too
