"""Framing inside an intercepted tunnel: heads read to their blank line however they are
split, 431 past the header limit, request smuggling refused before any body is read,
chunked bodies decoded strictly, answers framed for keep-alive, idle tunnels closed."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator

import pytest

from keyfob.proxy import tunnel
from tests.proxy.forwarding import OPENAI_HOST, Forward, build

HOST = OPENAI_HOST.encode()


@pytest.fixture(scope="module")
def fwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forward]:
    yield from build(tmp_path_factory.mktemp("framing"))


class Answer:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def problem(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


class Client:
    """One intercepted tunnel to OPENAI_HOST and a reader of raw HTTP/1.1 answers."""

    def __init__(self, fwd: Forward) -> None:
        sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
        assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
        context = ssl.create_default_context(cafile=str(fwd.bundle))
        self.tls = context.wrap_socket(sock, server_hostname=OPENAI_HOST)
        self.tls.settimeout(5)
        self.buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.tls.close()

    def send(self, data: bytes) -> None:
        self.tls.sendall(data)

    def _more(self) -> bool:
        try:
            data = self.tls.recv(65536)
        except TimeoutError:
            raise AssertionError("the proxy neither answered nor closed the tunnel") from None
        except (ssl.SSLError, OSError):
            return False
        self.buf += data
        return bool(data)

    def closed(self) -> bool:
        """True if the proxy closes the tunnel (nothing more arrives)."""
        return not self.buf and not self._more()

    def answer(self, *, head_only: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"the tunnel closed before an answer: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.lower()] = value.strip()
        if head_only:
            body = b""
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            while len(self.buf) < length:
                assert self._more()
            body, self.buf = self.buf[:length], self.buf[length:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    assert self._more()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line, 16)
                while len(self.buf) < size + 2:
                    assert self._more()
                body += self.buf[:size]
                assert self.buf[size : size + 2] == b"\r\n"
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    break
        else:
            while self._more():
                pass
            body, self.buf = self.buf, b""
        return Answer(status, headers, body)

    def exchange(self, data: bytes) -> Answer:
        self.send(data)
        return self.answer()


def request(
    method: bytes = b"GET",
    path: bytes = b"/v1/echo",
    headers: bytes = b"",
    body: bytes = b"",
    host: bytes = HOST,
) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n%s" % (method, path, host, headers, body)


def denials(fwd: Forward) -> list[dict[str, object]]:
    return fwd.audit(action="forward.deny")


def refused(fwd: Forward, data: bytes, status: int, reason: str) -> None:
    """``data`` is refused with ``status`` and ``reason``, audited, and nothing is sent."""
    fwd.upstream.clear()
    before = len(denials(fwd))
    with Client(fwd) as client:
        answer = client.exchange(data)
        assert answer.status == status, answer.body
        assert answer.problem()["reason"] == reason
        assert answer.headers[b"connection"] == b"close"
        assert client.closed()
    assert fwd.upstream.seen == []
    denied = denials(fwd)
    assert len(denied) == before + 1
    details = denied[-1]["details"]
    assert isinstance(details, dict)
    assert details["reason"] == reason


def test_keep_alive_requests_are_answered_in_turn(fwd: Forward) -> None:
    fwd.upstream.clear()
    with Client(fwd) as client:
        for i in range(3):
            body = b'{"n": %d}' % i
            answer = client.exchange(
                request(b"POST", headers=b"Content-Length: %d\r\n" % len(body), body=body)
            )
            assert answer.status == 200
            assert json.loads(answer.body)["body"] == body.decode()
    assert [s.body for s in fwd.upstream.seen] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


def test_pipelined_requests_are_answered_in_order(fwd: Forward) -> None:
    with Client(fwd) as client:
        client.send(request(path=b"/v1/echo?n=1") + request(path=b"/v1/echo?n=2"))
        first, second = client.answer(), client.answer()
    assert json.loads(first.body)["query"] == "n=1"
    assert json.loads(second.body)["query"] == "n=2"


def test_pipelined_bodies_end_where_their_length_says(fwd: Forward) -> None:
    fwd.upstream.clear()
    first = request(b"POST", headers=b"Content-Length: 5\r\n", body=b"first")
    second = request(b"POST", headers=b"Content-Length: 6\r\n", body=b"second")
    with Client(fwd) as client:
        client.send(first + second)
        assert [client.answer().status for _ in range(2)] == [200, 200]
    assert [s.body for s in fwd.upstream.seen] == [b"first", b"second"]


def test_a_head_split_across_reads_is_read_whole(fwd: Forward) -> None:
    """Pieces with pauses between them, one cut inside the blank line that ends the head."""
    data = request(b"POST", headers=b"Content-Length: 5\r\nX-Split: yes\r\n", body=b"hello")
    cut = data.index(b"\r\n\r\n") + 3  # ...\r\n\r | \n
    pieces = [data[:10], data[10:40], data[40:cut], data[cut:-2], data[-2:]]
    fwd.upstream.clear()
    with Client(fwd) as client:
        for piece in pieces:
            client.send(piece)
            time.sleep(0.05)
        answer = client.answer()
    assert answer.status == 200
    assert fwd.upstream.seen[-1].body == b"hello"
    assert fwd.upstream.seen[-1].header("x-split") == "yes"


def _padded(size: int) -> bytes:
    """A request whose head is exactly ``size`` bytes (pad headers of at most 4 KiB: the
    fake upstream's aiohttp refuses longer lines)."""
    bare = request()
    pads = []
    left = size - len(bare)
    index = 0
    while left > 0:
        name = b"X-Pad-%d: " % index
        take = min(4096, left - len(name) - 2)
        assert take > 0
        pads.append(name + b"a" * take + b"\r\n")
        left -= len(pads[-1])
        index += 1
    data = request(headers=b"".join(pads))
    assert data.index(b"\r\n\r\n") + 4 == len(data) == size
    return data


def test_a_head_under_the_limit_is_served(fwd: Forward) -> None:
    # The app counts the header bytes again, with the set's lease (~60 bytes) added.
    data = _padded(fwd.server.settings.proxy_max_header_bytes - 200)
    with Client(fwd) as client:
        assert client.exchange(data).status == 200


def test_a_head_over_the_limit_is_431(fwd: Forward) -> None:
    refused(fwd, _padded(fwd.server.settings.proxy_max_header_bytes + 1), 431, "headers_too_large")


def test_a_head_over_the_limit_is_refused_before_it_ends(fwd: Forward) -> None:
    """Sent slowly and never finished: refused once past the limit, not after a timeout."""
    limit = fwd.server.settings.proxy_max_header_bytes
    with Client(fwd) as client:
        client.send(request().removesuffix(b"\r\n") + b"X-Pad: ")
        sent = 0
        while sent <= limit:
            client.send(b"a" * 4096)
            sent += 4096
            time.sleep(0.01)
        answer = client.answer()
    assert answer.status == 431


def test_heads_are_counted_one_request_at_a_time(fwd: Forward) -> None:
    """Several requests on one connection: each head is within the limit, all together
    are not."""
    limit = fwd.server.settings.proxy_max_header_bytes
    one = _padded(limit // 2)
    with Client(fwd) as client:
        client.send(one * 3)
        assert [client.answer().status for _ in range(3)] == [200, 200, 200]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 0x5\r\n",
        b"Content-Length: -5\r\n",
        b"Content-Length: \r\n",
        b"Content-Length: 1234567890123456789\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ],
)
def test_ambiguous_framing_is_refused_as_smuggling(fwd: Forward, framing: bytes) -> None:
    refused(fwd, request(b"POST", headers=framing, body=b"0\r\n\r\nhello"), 400, "smuggling")


@pytest.mark.parametrize(
    "data",
    [
        # obs-fold: a header line continued on the next
        request(headers=b"X-A: b\r\n c\r\n"),
        request(headers=b"X-A: b\r\n\tc\r\n"),
        # bare LF and bare CR
        b"GET /v1/echo HTTP/1.1\nHost: " + HOST + b"\n\n",
        request(headers=b"X-A: b\nX-B: c\r\n"),
        request(headers=b"X-A: b\rX-B: c\r\n"),
        # bad field names and values
        request(headers=b"X-A : b\r\n"),
        request(headers=b"X(A): b\r\n"),
        request(headers=b"X-A: a\x00b\r\n"),
        request(headers=b"X-A: a\x01b\r\n"),
        # the request line: one space each side, HTTP/1.0 or 1.1, a known method
        b"GET  /v1/echo HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n",
        b"GET /v1/echo HTTP/1.2\r\nHost: " + HOST + b"\r\n\r\n",
        b"GET /v1/echo HTTP/2.0\r\nHost: " + HOST + b"\r\n\r\n",
        b"GET /v1/echo\r\n\r\n",
        b"SMUGGLE /v1/echo HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n",
        b"GET /v1/e\x7fcho HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(fwd: Forward, data: bytes) -> None:
    refused(fwd, data, 400, "bad_request")


@pytest.mark.parametrize(
    "data",
    [
        b"GET /v1/echo HTTP/1.1\r\n\r\n",
        request(headers=b"Host: " + HOST + b"\r\n"),
        request(host=b"evil.example"),
        request(host=HOST + b":8443"),
    ],
)
def test_the_host_must_be_the_connects_and_only_once(fwd: Forward, data: bytes) -> None:
    refused(fwd, data, 421, "host_mismatch")


def test_the_host_may_carry_the_connects_port(fwd: Forward) -> None:
    with Client(fwd) as client:
        assert client.exchange(request(host=HOST + b":443")).status == 200


@pytest.mark.parametrize("target", [b"https://" + HOST + b"/v1/echo", b"*"])
def test_only_origin_form_targets(fwd: Forward, target: bytes) -> None:
    refused(fwd, request(b"OPTIONS", path=target), 400, "bad_target")


def test_a_chunked_body_is_decoded_and_the_next_request_read_after_it(fwd: Forward) -> None:
    fwd.upstream.clear()
    body = b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
    with Client(fwd) as client:
        answer = client.exchange(
            request(b"POST", headers=b"Transfer-Encoding: chunked\r\n", body=body)
        )
        assert answer.status == 200
        assert client.exchange(request(path=b"/v1/echo?after=1")).status == 200
    assert fwd.upstream.seen[0].body == b"hello, world"
    assert fwd.upstream.seen[0].header("x-trailer") is None
    assert fwd.upstream.seen[1].query == "after=1"


@pytest.mark.parametrize(
    "body",
    [
        b"z\r\nhello\r\n0\r\n\r\n",  # not hex
        b"5 \r\nhello\r\n0\r\n\r\n",  # space after the size
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
        b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
        b"5\r\nhello\r\n0\r\n\n",  # bare LF at the end
        b"5;a=\x01\r\nhello\r\n0\r\n\r\n",  # control character in an extension
        b"10000000000000000\r\nhello\r\n0\r\n\r\n",  # 17 hex digits
        b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",  # obs-fold in a trailer
        b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",  # a trailer that is not a field
    ],
)
def test_bad_chunks_close_the_tunnel_and_send_nothing(fwd: Forward, body: bytes) -> None:
    fwd.upstream.clear()
    with Client(fwd) as client:
        client.send(request(b"POST", headers=b"Transfer-Encoding: chunked\r\n", body=body))
        answer = client.answer()
        assert answer.status == 400
        assert answer.headers[b"connection"] == b"close"
        assert client.closed()
    assert fwd.upstream.seen == []


def test_a_body_cut_short_sends_nothing(fwd: Forward) -> None:
    fwd.upstream.clear()
    with Client(fwd) as client:
        client.send(request(b"POST", headers=b"Content-Length: 10\r\n", body=b"short"))
        time.sleep(0.1)
    time.sleep(0.3)
    assert fwd.upstream.seen == []
    with Client(fwd) as client:
        assert client.exchange(request()).status == 200


@pytest.mark.parametrize(
    "data",
    [
        request(headers=b"Connection: close\r\n"),
        b"GET /v1/echo HTTP/1.0\r\nHost: " + HOST + b"\r\n\r\n",
        # HTTP/1.0 keep-alive is not offered: the answer says close, and means it.
        b"GET /v1/echo HTTP/1.0\r\nHost: " + HOST + b"\r\nConnection: keep-alive\r\n\r\n",
    ],
)
def test_a_request_that_ends_the_connection_gets_its_answer_first(
    fwd: Forward, data: bytes
) -> None:
    with Client(fwd) as client:
        answer = client.exchange(data)
        assert answer.status == 200
        assert answer.headers[b"connection"] == b"close"
        assert client.closed()


def test_an_upgrade_is_refused_and_ends_the_connection(fwd: Forward) -> None:
    """The app refuses upgrades; the tunnel closes after the answer all the same, since
    what a client sends after an upgrade request is not HTTP/1.1."""
    with Client(fwd) as client:
        answer = client.exchange(request(headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
        assert answer.status == 400
        assert answer.headers[b"connection"] == b"close"
        assert client.closed()


def test_an_answer_to_head_has_no_body(fwd: Forward) -> None:
    """The next answer follows the HEAD answer's head directly, though that head carries
    the GET's Content-Length."""
    with Client(fwd) as client:
        client.send(request(b"HEAD") + request(path=b"/v1/echo?after=head"))
        head = client.answer(head_only=True)
        after = client.answer()
    assert head.status == 200
    assert int(head.headers[b"content-length"]) > 0
    assert after.status == 200
    assert json.loads(after.body)["query"] == "after=head"


def test_an_answer_without_a_length_is_chunked(fwd: Forward) -> None:
    with Client(fwd) as client:
        answer = client.exchange(request(path=b"/v1/sse?events=3"))
        assert answer.headers[b"transfer-encoding"] == b"chunked"
        assert answer.body.count(b"data: ") == 3
        assert client.exchange(request()).status == 200


def test_a_stream_is_not_held_back_for_coalescing(fwd: Forward) -> None:
    """The head and the first event arrive while the upstream still stalls."""
    with Client(fwd) as client:
        client.send(request(path=b"/v1/stall?delay=5"))
        began = time.monotonic()
        while b"data: first" not in client.buf:
            assert client._more()
        assert time.monotonic() - began < 3


def test_an_unread_body_is_skipped_and_the_connection_kept(fwd: Forward) -> None:
    """The app refuses before reading the body: the body is read past, the next request
    on the connection is served."""
    with Client(fwd) as client:
        refused_answer = client.exchange(
            request(
                b"POST",
                headers=b"X-Amz-Copy-Source: other/object\r\nContent-Length: 5\r\n",
                body=b"hello",
            )
        )
        assert refused_answer.status == 400
        assert refused_answer.problem()["type"] == "urn:keyfob:problem:forbidden-header"
        assert client.exchange(request()).status == 200


def test_an_idle_tunnel_is_closed(fwd: Forward, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tunnel, "IDLE_TIMEOUT", 1.0)
    with Client(fwd) as client:
        assert client.exchange(request()).status == 200
        time.sleep(0.3)
        # Idle for less than the timeout: still served.
        assert client.exchange(request()).status == 200
        began = time.monotonic()
        assert client.closed()
        assert time.monotonic() - began < 5


def test_large_bodies_pass_whole_both_ways(fwd: Forward) -> None:
    """A body over the app's one-piece size goes up as a stream, read in many pieces off
    the tunnel; a large answer comes down in many writes; the connection stays usable."""
    fwd.upstream.clear()
    upload = bytes(i % 251 for i in range(1_500_000))
    with Client(fwd) as client:
        client.send(request(b"POST", headers=b"Content-Length: %d\r\n" % len(upload)))
        for at in range(0, len(upload), 100_000):
            client.send(upload[at : at + 100_000])
        assert client.answer().status == 200
        big = client.exchange(request(path=b"/v1/big?n=700000"))
        assert big.body == b"x" * 700_000
        assert client.exchange(request()).status == 200
    assert fwd.upstream.seen[0].body == upload


def test_expect_100_continue_is_answered_when_the_body_is_wanted(fwd: Forward) -> None:
    """curl and others send ``Expect: 100-continue`` and hold the body back (curl for a
    second) until ``100 Continue`` comes: it comes as soon as the app reads the body."""
    fwd.upstream.clear()
    body = b'{"big": true}'
    with Client(fwd) as client:
        client.send(
            request(
                b"POST",
                headers=b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(body),
            )
        )
        interim = client.answer(head_only=True)  # before any body byte is sent
        assert interim.status == 100
        client.send(body)
        final = client.answer()
        assert final.status == 200
        assert json.loads(final.body)["body"] == body.decode()
        assert client.exchange(request()).status == 200  # the connection is kept
    assert fwd.upstream.seen[0].body == body
    assert fwd.upstream.seen[0].header("expect") is None  # hop by hop, not forwarded


def test_expect_100_continue_refused_before_the_body_closes_at_once(fwd: Forward) -> None:
    """Refused without reading the body: no 100, the refusal, then the tunnel closes
    instead of waiting for a body the client holds back."""
    fwd.upstream.clear()
    with Client(fwd) as client:
        client.send(
            request(
                b"POST",
                headers=b"Expect: 100-continue\r\nX-Amz-Copy-Source: other/object\r\n"
                b"Content-Length: 5000\r\n",
            )
        )
        began = time.monotonic()
        answer = client.answer()
        assert answer.status == 400
        assert client.closed()
        assert time.monotonic() - began < 3
    assert fwd.upstream.seen == []
