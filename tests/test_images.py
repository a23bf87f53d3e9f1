"""Image fetch / decode / preprocess against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline.images import DecodeConfig, FetchConfig, ImageError, LoadImages, decode_and_preprocess, load_image
from pipeline.images.decode import resize_and_pad, sniff
from pipeline.images.fetch import Fetcher, FetchError, is_public_address
from pipeline.records import ImageRecord
from tests.imageserver import ImageServer, bomb_png, cmyk_jpeg, jpeg, png, two_halves_jpeg, webp

DECODE = DecodeConfig(size=32, min_side=16, max_pixels=10_000_000)


def fast_fetch(**kw) -> FetchConfig:
    # The read timeout leaves a loaded machine time to answer (no spurious retries), and is still
    # well under the slow route's 3 s sleep, so TIMEOUT cases cannot pass by luck either way.
    defaults = dict(connect_timeout_s=1.0, read_timeout_s=2.0, total_timeout_s=5.0, max_retries=1,
                    backoff_base_s=0.01, backoff_max_s=0.05, retry_after_max_s=1.5, max_bytes=1_000_000,
                    max_redirects=3, allow_private_addresses=True, concurrency=8)
    return FetchConfig(**{**defaults, **kw})


@pytest.fixture(scope="module")
def server():
    with ImageServer() as s:
        yield s


# -- decode and preprocess ---------------------------------------------------------------
def test_sniff_uses_magic_bytes_not_names():
    assert sniff(jpeg()) == "JPEG" and sniff(png()) == "PNG" and sniff(webp()) == "WEBP"
    assert sniff(b"<html>") is None


@pytest.mark.parametrize("data, fmt", [(jpeg(), "JPEG"), (png(), "PNG"), (webp(), "WEBP")])
def test_good_images_become_uint8_squares(data, fmt):
    out = decode_and_preprocess(data, DECODE)
    assert out.array.shape == (32, 32, 3) and out.array.dtype == np.uint8
    assert (out.width, out.height, out.format) == (120, 160, fmt)


def test_exif_orientation_is_applied():
    out = decode_and_preprocess(two_halves_jpeg(6), DecodeConfig(size=60, min_side=16))
    assert (out.width, out.height) == (40, 60)  # portrait once rotated
    # Orientation 6 = rotate 90 degrees clockwise: the red left half becomes the top half.
    top, bottom = out.array[5, 30], out.array[54, 30]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_cmyk_and_alpha_and_palette_become_rgb():
    red = decode_and_preprocess(cmyk_jpeg(), DECODE).array[16, 16]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    transparent = decode_and_preprocess(png(mode="RGBA", color=(0, 0, 0, 0)), DECODE).array
    assert (transparent == 255).all()  # alpha composited onto white, not black
    buf = __import__("io").BytesIO()
    Image.new("L", (50, 50), 128).save(buf, "PNG")
    assert decode_and_preprocess(buf.getvalue(), DECODE).array.shape == (32, 32, 3)


def test_resize_pads_with_white_and_keeps_aspect():
    img = Image.new("RGB", (100, 50), (0, 0, 0))
    arr = resize_and_pad(img, 40)
    assert arr.shape == (40, 40, 3)
    assert (arr[:9] == 255).all() and (arr[-9:] == 255).all()  # padding above and below
    assert (arr[12:28] == 0).all()  # the image, 40x20, centred


@pytest.mark.parametrize("data, reason", [
    (b"<html>nope</html>", "NOT_AN_IMAGE"),
    (jpeg(size=(400, 400))[:1500], "CORRUPT_IMAGE"),
    (bomb_png(), "DECOMPRESSION_BOMB"),
    (png(size=(8, 8)), "TOO_SMALL"),
    (b"\xff\xd8\xff" + b"\x00" * 100, "CORRUPT_IMAGE"),
])
def test_bad_bytes_raise_with_a_reason(data, reason):
    with pytest.raises(ImageError) as info:
        decode_and_preprocess(data, DECODE)
    assert info.value.reason.value == reason


def test_jpeg_draft_decoding_never_goes_below_the_target_size():
    big = jpeg(size=(1500, 2000))
    out = decode_and_preprocess(big, DecodeConfig(size=299))
    assert out.array.shape == (299, 299, 3) and (out.width, out.height) == (1500, 2000)
    assert abs(int(out.array[150, 150, 0]) - 200) < 8  # the colour survives DCT scaling


# -- fetching ----------------------------------------------------------------------------
def fetch_reason(fetcher: Fetcher, url: str) -> str:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url)
    return info.value.reason.value


def test_http_outcomes(server):
    sleeps = []
    fetcher = Fetcher(fast_fetch(), sleep=sleeps.append)
    assert fetcher.fetch(server.url("/good.jpg")).status == 200
    flaky = fetcher.fetch(server.url("/flaky.jpg"))
    assert (flaky.status, flaky.attempts) == (200, 2)
    assert fetch_reason(fetcher, server.url("/missing.jpg")) == "HTTP_4XX"
    assert fetch_reason(fetcher, server.url("/always500.jpg")) == "HTTP_5XX"
    assert fetch_reason(fetcher, server.url("/slow.jpg")) == "TIMEOUT"
    assert fetch_reason(fetcher, server.url("/endless.jpg")) == "TOO_LARGE"
    assert fetch_reason(fetcher, server.url("/to-ftp.jpg")) == "FORBIDDEN_URI"
    assert fetch_reason(fetcher, server.url("/loop.jpg")) == "TOO_MANY_REDIRECTS"
    assert fetcher.fetch(server.url("/to-good.jpg")).data == server.routes["/good.jpg"][1]
    fetcher.close()


def test_a_dripping_body_times_out_at_the_total_deadline(server):
    """A server sending one byte every 0.2 s never trips the 2 s read timeout; the total
    deadline (1 s here) must still end the fetch, per attempt, instead of after the whole drip."""
    fetcher = Fetcher(fast_fetch(total_timeout_s=1.0, max_retries=0), sleep=lambda _: None)
    started = time.monotonic()
    assert fetch_reason(fetcher, server.url("/drip.jpg")) == "TIMEOUT"
    assert time.monotonic() - started < 6.0  # the drip itself lasts 8 s; a loaded machine needs a margin
    # Content-Encoding is still decoded with the chunked reads.
    assert fetcher.fetch(server.url("/gzip.jpg")).data == jpeg(color=(7, 8, 9))
    fetcher.close()


def test_retry_after_is_honoured(server):
    sleeps = []
    fetcher = Fetcher(fast_fetch(), sleep=sleeps.append)
    result = fetcher.fetch(server.url("/ratelimited.jpg"))
    assert result.attempts == 2 and sleeps == [1.0]  # Retry-After: 1 beats the 10 ms backoff
    fetcher.close()


def test_retries_are_bounded_with_exponential_backoff(server):
    sleeps = []
    fetcher = Fetcher(fast_fetch(max_retries=3, backoff_base_s=0.1, backoff_max_s=10), sleep=sleeps.append)
    with pytest.raises(FetchError) as info:
        fetcher.fetch(server.url("/always500.jpg"))
    assert info.value.attempts == 4 and len(sleeps) == 3
    for n, delay in enumerate(sleeps):  # jitter keeps each delay within [0.5, 1] x base * 2^n
        assert 0.05 * 2 ** n <= delay <= 0.1 * 2 ** n


def test_private_address_guard(server):
    guarded = Fetcher(fast_fetch(allow_private_addresses=False))
    assert fetch_reason(guarded, server.url("/good.jpg")) == "FORBIDDEN_URI"  # loopback refused
    # The loopback test server stands in for a public host: a policy that admits 127.0.0.1 alone.
    fetcher = Fetcher(fast_fetch(allow_private_addresses=False), address_policy=lambda a: a == "127.0.0.1")
    assert fetcher.fetch(server.url("/good.jpg")).status == 200
    assert fetch_reason(fetcher, server.url("/to-private.jpg")) == "FORBIDDEN_URI"  # redirect hop re-checked
    assert fetch_reason(fetcher, server.url("/to-metadata.jpg")) == "FORBIDDEN_URI"
    assert server.hits["/x.jpg"] == 0 and server.hits["/latest"] == 0


def test_the_checked_address_is_the_one_connected_to(server):
    """DNS rebinding: a second lookup would answer a private address; there is none."""
    port = int(server.url("/").rsplit(":", 1)[1].split("/")[0])
    calls = []

    def resolver(host, port_, *args):
        calls.append(host)
        ip = "127.0.0.1" if len(calls) == 1 else "10.9.9.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_))]

    fetcher = Fetcher(fast_fetch(allow_private_addresses=False), resolver=resolver,
                      address_policy=lambda a: a == "127.0.0.1")
    assert fetcher.fetch(f"http://images.shop.test:{port}/good.jpg").status == 200
    assert calls == ["images.shop.test"]  # resolved once, by the guard; the system resolver never asked


def test_a_request_through_an_environment_proxy_is_still_guarded(server, monkeypatch):
    """With HTTP_PROXY set, the proxy connects, not the guarded pools: the target is checked first."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url(""))  # the loopback server stands in for the proxy
    fetcher = Fetcher(fast_fetch(allow_private_addresses=False), address_policy=lambda a: a == "127.0.0.1")
    assert fetch_reason(fetcher, "http://10.1.2.3/secret.jpg") == "FORBIDDEN_URI"
    assert server.hits["http://10.1.2.3/secret.jpg"] == 0  # never sent to the proxy
    allowed = "http://127.0.0.1:9/via-proxy.jpg"  # admitted by the policy: goes through the proxy
    assert fetch_reason(fetcher, allowed) == "HTTP_4XX"  # the stand-in proxy knows no such route
    assert server.hits[allowed] == 1


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2a00:1450:4001:81b::200e", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
    ("2002:7f00:1::", False), ("224.0.0.1", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public


def test_malformed_urls_and_hosts_are_refused_not_crashes(server):
    fetcher = Fetcher(fast_fetch(allow_private_addresses=False))
    for url in ("http://example.com:99999/x.jpg", "http://" + "a" * 70 + ".example/x.jpg", "http://[::1/x.jpg"):
        assert fetch_reason(fetcher, url) == "FORBIDDEN_URI", url


def test_an_unusable_cache_does_not_fail_the_fetch(server, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    fetcher = Fetcher(fast_fetch(cache=str(blocker / "cache")))
    assert fetcher.fetch(server.url("/etag.jpg")).status == 200


def test_cache_revalidates_with_etag_and_skips_the_download(server, tmp_path):
    """The caching behaviour, not the scheduler: the first fetch downloads (a retry after a read
    timeout on a loaded machine may download twice), the second only revalidates (304, no body)."""
    before = server.bodies_sent["/etag.jpg"]
    first = Fetcher(fast_fetch(cache=str(tmp_path / "cache"))).fetch(server.url("/etag.jpg"))
    assert (first.status, first.cache_hit) == (200, False)
    assert server.bodies_sent["/etag.jpg"] - before >= 1
    between = server.bodies_sent["/etag.jpg"]
    again = Fetcher(fast_fetch(cache=str(tmp_path / "cache"))).fetch(server.url("/etag.jpg"))
    assert (again.status, again.cache_hit) == (304, True)
    assert again.data == first.data
    assert server.bodies_sent["/etag.jpg"] == between  # revalidated: not one body downloaded


def test_local_files_only_under_allowed_roots(tmp_path):
    inside = tmp_path / "dump" / "img.jpg"
    inside.parent.mkdir()
    inside.write_bytes(jpeg())
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg())
    (tmp_path / "dump" / "link.jpg").symlink_to(outside)
    fetcher = Fetcher(fast_fetch(allowed_roots=(str(tmp_path / "dump"),)))
    assert fetcher.fetch(str(inside)).status is None
    assert fetch_reason(fetcher, str(outside)) == "FORBIDDEN_URI"
    assert fetch_reason(fetcher, str(tmp_path / "dump" / "link.jpg")) == "FORBIDDEN_URI"  # symlink out
    (tmp_path / "elsewhere" / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere" / "img.jpg").write_bytes(jpeg())
    (tmp_path / "dump" / "linked").symlink_to(tmp_path / "elsewhere" / "sub")
    linked = tmp_path / "dump" / "linked"
    assert fetch_reason(fetcher, str(linked / "x.jpg")) == "FORBIDDEN_URI"  # a folder symlinked out
    assert fetch_reason(fetcher, f"{linked}/../img.jpg") == "FORBIDDEN_URI"  # '..' after the link: elsewhere/img.jpg
    assert fetcher.fetch(f"{linked}/../../dump/img.jpg").status is None  # back inside, the same way
    # A folder read once (its real path remembered), then swapped for a symlink out of the roots.
    (tmp_path / "dump" / "sub").mkdir()
    (tmp_path / "dump" / "sub" / "img.jpg").write_bytes(jpeg())
    assert fetcher.fetch(str(tmp_path / "dump" / "sub" / "img.jpg")).status is None
    (tmp_path / "dump" / "sub").rename(tmp_path / "moved")
    (tmp_path / "dump" / "sub").symlink_to(tmp_path / "elsewhere")
    assert fetch_reason(fetcher, str(tmp_path / "dump" / "sub" / "img.jpg")) == "FORBIDDEN_URI"
    assert fetch_reason(fetcher, str(tmp_path / "dump" / "gone.jpg")) == "NOT_FOUND"
    assert fetch_reason(fetcher, "ftp://example.com/x.jpg") == "FORBIDDEN_URI"


# -- the Beam stage ----------------------------------------------------------------------
CASES = {
    "/good.jpg": None, "/good.png": None, "/good.webp": None, "/flaky.jpg": None, "/ratelimited.jpg": None,
    "/rotated.jpg": None, "/cmyk.jpg": None, "/alpha.png": None, "/palette.gif": None, "/to-good.jpg": None,
    "/missing.jpg": "HTTP_4XX", "/always500.jpg": "HTTP_5XX", "/slow.jpg": "TIMEOUT", "/endless.jpg": "TOO_LARGE",
    "/page.html": "NOT_AN_IMAGE", "/lying.jpg": "NOT_AN_IMAGE", "/truncated.jpg": "CORRUPT_IMAGE",
    "/bomb.png": "DECOMPRESSION_BOMB", "/tiny.png": "TOO_SMALL", "/to-ftp.jpg": "FORBIDDEN_URI",
    "/loop.jpg": "TOO_MANY_REDIRECTS",
}


def record(uri: str, n: int) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=f"p{n}", image_position=1, image_uri=uri,
                       source_file="dump.jsonl", source_line=n)


def test_load_images_stage_accounts_for_every_record(tmp_path):
    with ImageServer() as server:  # own server: hit counters start at zero
        records = [record(server.url(path), n) for n, path in enumerate(CASES)]
        expected_ok = sorted(server.url(p) for p, r in CASES.items() if r is None)
        expected_dead = sorted((server.url(p), r) for p, r in CASES.items() if r is not None)
        with TestPipeline() as p:
            # Two retries: a connection attempt lost to a loaded machine must not use up the one
            # retry that /flaky.jpg and /ratelimited.jpg need.
            out = p | beam.Create(records) | LoadImages(fast_fetch(max_retries=2), DECODE)
            assert_that(out["images"] | "OkUris" >> beam.Map(lambda e: e[0].image_uri), equal_to(expected_ok),
                        label="ok")
            assert_that(out["dead_letter"] | "DeadReasons" >> beam.Map(lambda d: (d.image_uri, d.reason)),
                        equal_to(expected_dead), label="dead")
            assert_that(out["images"] | "Shapes" >> beam.Map(lambda e: (e[1].shape, e[1].dtype.name,
                                                                        e[0].image_width > 0,
                                                                        len(e[0].image_sha256),
                                                                        e[0].http_status)),
                        equal_to([((32, 32, 3), "uint8", True, 64, 200)] * len(expected_ok)), label="shapes")
            assert_that(out["dead_letter"] | "Stages" >> beam.Map(lambda d: d.stage) | beam.Distinct(),
                        equal_to(["fetch", "decode"]), label="stages")


def test_identical_bytes_give_identical_arrays_and_training_sees_the_same_pixels(tmp_path):
    folder = tmp_path / "dump"
    folder.mkdir()
    data = jpeg(size=(300, 200), color=(90, 140, 10))
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(data)
    fetch = fast_fetch(allowed_roots=(str(folder),))
    decode = DecodeConfig(size=64)
    training = load_image(str(folder / "a.jpg"), decode=decode, fetch=fetch).array
    with TestPipeline() as p:
        out = p | beam.Create([record(str(folder / "a.jpg"), 1), record(str(folder / "b.jpg"), 2)]) | LoadImages(
            fetch, decode)
        assert_that(out["images"] | beam.Map(lambda e: (e[0].image_sha256, e[1].tobytes() == training.tobytes())),
                    equal_to([(__import__("hashlib").sha256(data).hexdigest(), True)] * 2), label="same pixels")
