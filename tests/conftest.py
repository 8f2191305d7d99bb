import functools
import gzip
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

# one intra-op thread per test worker: the suite runs with pytest -n 2 on 2 cores
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the repository (../shared/data), or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - quiet; record the paths instead
        self.server.requests.append(self.path)


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields (base URL, www dir, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, httpd.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


#: what :func:`trickle_server` sends: a gzip stream of 10,240 bytes, ``bytes(range(256)) * 40``
TRICKLE_BODY = gzip.compress(bytes(range(256)) * 40, mtime=0)


@pytest.fixture
def trickle_server():
    """A loopback HTTP server that sends a (valid gzip) body, :data:`TRICKLE_BODY`, one byte every 0.5 s."""
    import time

    stop = threading.Event()
    body = TRICKLE_BODY

    class Trickle(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                if stop.is_set():
                    return
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.5)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fresh_cifar_caches():
    """Checksum verification and the CIFAR-10 reader cache forgotten before and after a test."""
    import flowvi_experiments.data as fd
    from flowvi_experiments.data import cifar

    fd.clear_verification_cache()
    cifar.clear_cache()
    yield
    fd.clear_verification_cache()
    cifar.clear_cache()


def write_amat(path: Path, n: int, seed: int) -> None:
    """``n`` random binary 784-pixel images (20% ones) in the text format of binarized MNIST."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 784, generator=g) < 0.2).int()
    path.write_text("".join(" ".join(map(str, row.tolist())) + "\n" for row in x))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data directory with tiny binarized-MNIST splits (60 train, 20 valid, 20 test images)."""
    root = tmp_path_factory.mktemp("data")
    (root / "binarized_mnist").mkdir()
    for split, n, seed in (("train", 60, 0), ("valid", 20, 1), ("test", 20, 2)):
        write_amat(root / "binarized_mnist" / f"binarized_mnist_{split}.amat", n, seed)
    return root

