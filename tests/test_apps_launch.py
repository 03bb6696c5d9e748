"""How every app launches (apps.common.launch_kwargs), tried on a real Gradio server on loopback: Host headers
other than the loopback names are refused (DNS rebinding), and an upload over the limit is refused while Gradio
receives it."""

from __future__ import annotations

import socket

import gradio as gr
import httpx
import pytest

from apps.common import AppSettings, Limits, allowed_hosts, launch_kwargs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_loopback_bind_answers_its_own_names_only():
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("::1", ["Chat.Team.Example"]) == ["localhost", "127.0.0.1", "[::1]", "chat.team.example"]
    assert allowed_hosts("127.0.0.2") == ["localhost", "127.0.0.1", "[::1]", "127.0.0.2"]
    assert allowed_hosts("localhost") == ["localhost", "127.0.0.1", "[::1]"]
    for exposed in ("0.0.0.0", "192.168.1.20", "myhost.lan"):
        assert allowed_hosts(exposed) is None  # reached by whatever name the network gives it


def test_launch_kwargs_carry_the_limits():
    kwargs = launch_kwargs(AppSettings(port=7000), Limits(upload_mb=3))
    assert (kwargs["server_name"], kwargs["server_port"], kwargs["max_file_size"]) == ("127.0.0.1", 7000, 3 * 2**20)
    assert "app_kwargs" not in launch_kwargs(AppSettings(host="0.0.0.0"))


@pytest.fixture
def launched():
    with gr.Blocks() as demo:
        gr.File()
    settings = AppSettings(port=free_port(), allow_hosts=["chat.team.example"])
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(settings, Limits(upload_mb=1)))
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        demo.close()


def test_a_launched_app_refuses_other_hosts_and_big_uploads(launched):
    assert httpx.get(launched).status_code == 200
    assert httpx.get(launched, headers={"Host": "localhost:7860"}).status_code == 200
    assert httpx.get(launched, headers={"Host": "chat.team.example"}).status_code == 200
    refused = httpx.get(launched, headers={"Host": "evil.example"})
    assert (refused.status_code, refused.text) == (400, "Invalid host header")
    assert httpx.post(f"{launched}/gradio_api/upload", headers={"Host": "evil.example"},
                      files={"files": ("a.txt", b"hi")}).status_code == 400
    small = httpx.post(f"{launched}/gradio_api/upload", files={"files": ("a.txt", b"hi")})
    assert small.status_code == 200
    big = httpx.post(f"{launched}/gradio_api/upload", files={"files": ("big.pdf", bytes(2 * 2**20))})
    assert big.status_code == 413 and "maximum allowed size" in big.text
