"""The HTML diff report: self-contained structure, and a real render in headless Chromium."""

from __future__ import annotations

import re

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunec.diff_html import render_html
from prunec.graph_diff import diff_ir
from prunec.ir import format_graph
from prunec.trace import trace

CHROMIUM = "/usr/bin/chromium"
AFTER_BLUE = (0x2B, 0x7D, 0xE9)


def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 8)).eval()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    x = torch.randn(2, 16)
    diff = diff_ir(format_graph(trace(_mlp(64), (x,))), format_graph(trace(_mlp(40), (x,))), "wide.txt", "narrow.txt")
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(diff), encoding="utf-8")
    return path


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained_with_chart_and_tables(report: Path) -> None:
    html = report.read_text()
    parser = _Tags()
    parser.feed(html)
    tags = parser.tags
    assert not any(t in ("script", "link", "img", "iframe") for t, _ in tags)
    assert not any(v and v.startswith(("http:", "https:", "//")) for t, a in tags for k, v in a.items()
                   if k in ("src", "href"))
    assert sum(t == "svg" for t, _ in tags) == 1
    before = [a for t, a in tags if t == "rect" and a.get("class") == "before"]
    after = [a for t, a in tags if t == "rect" and a.get("class") == "after"]
    assert len(before) == len(after) == 3  # three linear layers
    widths = [float(a["width"]) for a in after]
    assert widths[0] < float(before[0]["width"])  # 64 -> 40 is drawn shorter
    assert any(t == "table" and a.get("class") == "grid costs" for t, a in tags)
    assert "64 → 40" in html and "[40, 16]" in html


def _decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, channels and raw pixels of an 8-bit, non-interlaced RGB/RGBA PNG (zlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    out, prev = bytearray(), bytearray(stride)
    for row in range(height):
        f = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out += line
        prev = line
    return width, height, channels, bytes(out)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium is not installed (Debian package 'chromium')")
def test_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    dom = _chromium(["--dump-dom", report.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<svg" in dom.stdout and 'class="grid costs"' in dom.stdout and 'class="diff"' in dom.stdout
    shot = tmp_path / "report.png"
    run = _chromium([f"--screenshot={shot}", "--window-size=1200,1400", report.as_uri()], tmp_path / "profile-shot")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    width, height, channels, pixels = _decode_png(shot.read_bytes())
    assert (width, height) == (1200, 1400)
    # Not blank: many distinct colours, and the chart's "after" bars are on screen.
    sample = {pixels[i:i + 3] for i in range(0, len(pixels), channels * 7)}
    assert len(sample) > 50
    blue = sum(1 for i in range(0, len(pixels), channels)
               if abs(pixels[i] - AFTER_BLUE[0]) < 8 and abs(pixels[i + 1] - AFTER_BLUE[1]) < 8
               and abs(pixels[i + 2] - AFTER_BLUE[2]) < 8)
    assert blue > 500


def test_ir_side_by_side_keeps_lines_whole(report) -> None:
    """IR lines are not wrapped mid-token (difflib marks a wrapped line's continuation with '>' in the
    line-number column); the table scrolls sideways instead."""
    html = report.read_text(encoding="utf-8")
    assert 'class="diff_header">&gt;</td>' not in html
    assert re.search(r'<div class="scroll">\s*<table class="diff"', html)
    assert "unified context" not in html
