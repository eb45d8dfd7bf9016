"""Upload handling: a hard size limit on the request body, and bytes -> RGB through the data layer.

Why a raw ASGI middleware instead of checking ``UploadFile.size`` in the route: by the time a route runs,
the multipart parser has already spooled the whole body to disk. The middleware rejects an oversized
request from its ``Content-Length`` header before reading anything, and counts the streamed bytes for
requests that lie about (or omit) their length, so a client can never make the server store more than the
limit. Either way the answer is 413 with a JSON ``detail``.

Decoding goes through :mod:`birdlens.data.images` so the page accepts exactly what training accepts (PNG
with alpha on grey, CMYK JPEG, EXIF orientation, first frame) and rejects the same files (non-images,
truncated files, decompression bombs) with the same human reasons. File names from the client are never
used for anything but display.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from PIL import Image

from birdlens.data.images import BadImage, decode_rgb, open_image, to_rgb

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 10 * MB
# multipart boundaries, part headers and the small form fields (method, params) ride on top of the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """The uploaded file is over the limit (raised when the size is only known after reading)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(too_large_message(limit, size))
        self.size = size
        self.limit = limit


def too_large_message(limit: int, size: int | None = None) -> str:
    """MB here is 2**20 bytes, as in ``--max-upload-mb`` (the default limit reads "10.0 MB")."""
    got = "" if size is None else f" ({size / MB:.1f} MB sent)"
    return f"upload too large: the limit is {limit / MB:.1f} MB{got}"


class BodyLimitMiddleware:
    """Answer 413 for any HTTP request whose body is over ``max_body_bytes``.

    Checked twice: the declared ``Content-Length`` (nothing is read) and the bytes actually streamed (a
    chunked or lying client). When the stream goes over, the app gets a disconnect, whatever it answers is
    dropped, and a 413 is sent instead (older FastAPI versions turn body-parsing errors into 400, so raising
    through the app would not be reliable).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, file_limit: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.file_limit = int(file_limit if file_limit is not None else max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_json(send, 413, {"detail": too_large_message(self.file_limit, declared)})
            return

        state = {"received": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"] and not state["started"]:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _send_json(
                send, 413, {"detail": too_large_message(self.file_limit, int(state["received"]))}
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def check_size(data: bytes, limit: int) -> bytes:
    """The file part itself must also fit (the body limit allows for multipart overhead)."""
    if len(data) > limit:
        raise UploadTooLarge(len(data), limit)
    return data


# Short side kept >= REDUCE_GAP x what the model's resize needs: Pillow's own ``reducing_gap`` rule, after
# which the final antialiased resize is indistinguishable from one done at full resolution.
REDUCE_GAP = 2
STRIP_PIXELS = 1 << 20  # pixels converted to RGB at a time while reducing (a few MB, whatever the image)
_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_upload(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Uploaded bytes -> RGB image by the data layer's rule; :class:`BadImage` with a reason otherwise.

    ``draft_size``: the short side the model's resize goes to. The image is shrunk to about that as early as
    the format allows, because the server holds every waiting request's image: a JPEG decodes at a reduced
    DCT scale (``draft``), any other format is decoded once and reduced by an integer factor strip by strip
    (:func:`reduce_rgb`), so no full-size copy (RGB conversion, EXIF rotation) is ever made.
    """
    if not data:
        raise BadImage("empty upload (0 bytes)")
    img = open_image(data)
    factor = 1 if draft_size is None else min(img.size) // (REDUCE_GAP * draft_size)
    if factor < 2 or img.format == "JPEG":
        return decode_rgb(img, draft_size=draft_size)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # the data layer names what is wrong (it fails the same way on the same bytes)
        img.close()
        return decode_rgb(open_image(data))
    small = reduce_rgb(img, factor)
    img.close()
    transpose = _TRANSPOSE.get(orientation)
    return small if transpose is None else small.transpose(transpose)


def reduce_rgb(img: Image.Image, factor: int) -> Image.Image:
    """``to_rgb(img).reduce(factor)``, computed a strip at a time so the full-size RGB image never exists.

    Strips are a multiple of ``factor`` rows high, so the result is pixel-identical to the one-shot version.
    ``I``/``F`` images are converted whole: :func:`~birdlens.data.images.to_rgb` scales them by the range of
    the entire image.
    """
    if img.mode in ("I", "F"):
        return to_rgb(img).reduce(factor)
    w, h = img.size
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    step = factor * max(1, STRIP_PIXELS // (w * factor))
    for y in range(0, h, step):
        strip = to_rgb(img.crop((0, y, w, min(h, y + step))))
        out.paste(strip.reduce(factor), (0, y // factor))
    return out


def upright_size(data: bytes) -> tuple[int, int]:
    """Width and height of the photo as shown (EXIF orientation applied), from the header alone."""
    img = open_image(data)
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block does not change the answer
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
