"""The authors' models in one call: download once from a URL (here a server on 127.0.0.1 holding the
original-layout fixture checkpoints), sha256 check from the file name, conversion; wrong hash and
unreachable host give one clear error and leave the cache untouched."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from toolkit.io import DataError
from toolkit.oflow import pretrained
from toolkit.oflow.pretrained import AUTHORS_MODELS, authors_model_url, fetch_checkpoint
from toolkit.oflow.train import load_pretrained


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(oflow_fixtures, tmp_path):
    """An HTTP server on 127.0.0.1 serving the fixtures under the authors' layout, correctly hashed names."""
    root = tmp_path / "www"
    names = {}
    for task, fixture in (("pointcloud", "pointcloud_oflow.pt"), ("generative", "generative_oflow.pt")):
        data = (oflow_fixtures / fixture).read_bytes()
        name = f"{task}/oflow_model-{hashlib.sha256(data).hexdigest()[:8]}.pt"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        names[task] = name
    wrong = root / "pointcloud" / "oflow_model-00000000.pt"
    shutil.copy(root / names["pointcloud"], wrong)
    handler = partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", names
    httpd.shutdown()


def test_authors_model_downloads_once_and_converts(server, tmp_path, monkeypatch, oflow_fixtures):
    base, names = server
    monkeypatch.setenv("TOOLKIT_OFLOW_MODELS_URL", base)
    monkeypatch.setitem(AUTHORS_MODELS, "pointcloud", names["pointcloud"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    loaded = load_pretrained("pointcloud", source="authors", progress=False)
    cached = tmp_path / "hub" / "checkpoints" / Path(names["pointcloud"]).name
    assert cached.read_bytes() == (oflow_fixtures / "pointcloud_oflow.pt").read_bytes()
    ref = torch.load(oflow_fixtures / "pointcloud_oflow.pt", weights_only=True)["model"]
    for key, value in ref.items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0, check_dtype=False)
    assert loaded.model.config.c_dim == 128 and loaded.meta["source"] == "original"
    # the second call reads the cache: the server is not asked again
    monkeypatch.setenv("TOOLKIT_OFLOW_MODELS_URL", "http://127.0.0.1:9")
    again = load_pretrained("pointcloud", source="authors", progress=False)
    assert again.model.config == loaded.model.config


def test_names_pick_the_source():
    assert authors_model_url("pointcloud_w_correspond").endswith("pointcloud/oflow_w_correspond_model-13c0a3ed.pt")
    assert authors_model_url("generative").startswith(pretrained.AUTHORS_BASE_URL)
    with pytest.raises(ValueError, match="unknown authors' model 'nope'; valid"):
        authors_model_url("nope")
    with pytest.raises(ValueError, match="unknown source 'web'"):
        load_pretrained("completion", source="web")


def test_wrong_hash_leaves_nothing_in_the_cache(server, tmp_path):
    base, _ = server
    with pytest.raises(DataError, match=r"oflow_model-00000000\.pt.*sha256 does not start with 00000000"):
        fetch_checkpoint(f"{base}/pointcloud/oflow_model-00000000.pt", cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_host_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pointcloud/oflow_model-3ff330bc.pt"
    with pytest.raises(DataError, match=r"download failed .*copy the file to .*oflow_model-3ff330bc\.pt"):
        fetch_checkpoint(url, cache_dir=tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache").iterdir())
    with pytest.raises(DataError, match="no sha256 prefix"):
        fetch_checkpoint("http://127.0.0.1:1/model.pt", cache_dir=tmp_path / "cache")
