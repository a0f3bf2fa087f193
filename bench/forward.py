"""The forward proxy's benchmark row: 32 keep-alive clients through CONNECT + TLS
interception, against the reverse route in the same run, to the same TLS upstream.

``python bench/forward.py [--clients 32] [--duration 10] [--rounds 2] [--handshakes 200]
[--modes reverse,forward]``

One keyfob process serves both routes (``KEYFOB_PROXY_LISTEN``); the upstream is
``bench/upstream.py``'s protocol behind TLS, named ``bench.example`` through
``KEYFOB_TEST_RESOLVE``. Each client sends the same POST back to back on one
connection: through the reverse route in plain HTTP to ``/proxy/{set}/…``, or through a
CONNECT tunnel (one TLS handshake per client, then keep-alive) to
``https://bench.example/…``. The load generator shares the machine's cores with keyfob
and does the client side of TLS for the forward row, so the ratio is a lower bound.
The handshake row times CONNECT + TLS with keyfob's leaf already cached.

Each row also gives keyfob's CPU time per request (``cpu_ms_per_request``: user + system
time of the keyfob process over the measured window, from ``/proc/<pid>/stat``, divided by
the requests answered in it): on a loaded machine requests per second move with the other
tenants, CPU per request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from upstream import Upstream  # noqa: E402

HOST = "bench.example"
SET_PATH = "generic/bench/fwd"
PATH = "/v1/chat/completions"
BODY = b'{"model":"bench","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'
KEY = "sk-bench-" + "f" * 40
_SERVE = (
    "import sys; from pathlib import Path; from keyfob.settings import Settings; "
    "from keyfob.app.bootstrap import run_server; "
    "run_server(Settings(data_dir=Path(sys.argv[1])), '127.0.0.1', int(sys.argv[2]))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pki(directory: Path) -> tuple[Path, Path]:
    """A CA and a certificate for ``HOST``: (CA file, key+cert file)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pair = directory / "upstream.pem"
    pair.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + leaf.public_bytes(serialization.Encoding.PEM)
    )
    return ca_file, pair


async def tls_upstream(port: int, pair: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(loop), "127.0.0.1", port, ssl=context, backlog=4096
    )
    async with server:
        await server.serve_forever()


def upstream_main(port: int, pair: str) -> None:
    uvloop.run(tls_upstream(port, Path(pair)))


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    return status


async def _tunnel(
    proxy_port: int, credential: str, trust: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    auth = base64.b64encode(f"keyfob:{credential}".encode()).decode()
    writer.write(
        f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n"
        f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT refused: {head[:200]!r}")
    await writer.start_tls(trust, server_hostname=HOST)
    return reader, writer


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def load(
    mode: str,
    clients: int,
    duration: float,
    warmup: float,
    connect: Any,
    request: bytes,
    server_pid: int,
) -> dict[str, Any]:
    done = 0
    errors = 0
    start = time.monotonic() + warmup
    end = start + duration
    cpu: list[float] = []

    async def sample() -> None:
        for moment in (start, end):
            await asyncio.sleep(max(0.0, moment - time.monotonic()))
            cpu.append(cpu_seconds(server_pid))

    async def client() -> None:
        nonlocal done, errors
        reader, writer = await connect()
        try:
            while (now := time.monotonic()) < end:
                writer.write(request)
                status = await _read_response(reader)
                if time.monotonic() <= end and now >= start:
                    if status == 200:
                        done += 1
                    else:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(sample(), *(client() for _ in range(clients)))
    used = cpu[1] - cpu[0]
    return {
        "mode": mode,
        "clients": clients,
        "rps": round(done / duration, 1),
        "errors": errors,
        "cpu_ms_per_request": round(used * 1000 / done, 3) if done else None,
        "cpu_busy": round(used / duration, 2),
    }


async def measure(
    args: argparse.Namespace,
    proxy_port: int,
    kf_port: int,
    tokens: dict[str, str],
    trust: ssl.SSLContext,
    server_pid: int,
) -> dict[str, Any]:
    reverse = (
        f"POST /proxy/{SET_PATH}{PATH} HTTP/1.1\r\nHost: 127.0.0.1:{kf_port}\r\n"
        f"Authorization: Bearer {tokens['lease']}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    forward = (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer sk-placeholder\r\n"
        f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY

    async def plain() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", kf_port)

    async def tunnelled() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await _tunnel(proxy_port, tokens["credential"], trust)

    load_at_start = os.getloadavg()
    runs = {"reverse": (plain, reverse), "forward": (tunnelled, forward)}
    rows = []
    for _ in range(args.rounds):
        for mode in args.modes:
            connect, request = runs[mode]
            rows.append(
                await load(mode, args.clients, args.duration, 1.0, connect, request, server_pid)
            )
    # CONNECT + TLS with the leaf cached (the runs above minted it), one at a time.
    times: list[float] = []
    for _ in range(args.handshakes if "forward" in args.modes else 0):
        began = time.perf_counter()
        _, writer = await tunnelled()
        times.append((time.perf_counter() - began) * 1000)
        writer.close()
    result: dict[str, Any] = {
        "rows": rows,
        "load_average_start": [round(x, 2) for x in load_at_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    for mode in args.modes:
        mine = [r for r in rows if r["mode"] == mode]
        result[f"{mode}_rps"] = statistics.median(r["rps"] for r in mine)
        per_request = [r["cpu_ms_per_request"] for r in mine if r["cpu_ms_per_request"]]
        result[f"{mode}_cpu_ms_per_request"] = (
            round(statistics.median(per_request), 3) if per_request else None
        )
    if {"reverse", "forward"} <= set(args.modes) and result["reverse_rps"]:
        result["forward_vs_reverse"] = round(result["forward_rps"] / result["reverse_rps"], 3)
        if result["forward_cpu_ms_per_request"] and result["reverse_cpu_ms_per_request"]:
            result["forward_vs_reverse_cpu_per_request"] = round(
                result["forward_cpu_ms_per_request"] / result["reverse_cpu_ms_per_request"], 3
            )
    if times:
        result["handshake_ms_p50"] = round(statistics.median(times), 3)
        result["handshake_ms_p90"] = round(sorted(times)[int(0.9 * (len(times) - 1))], 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument(
        "--modes",
        type=lambda text: [m for m in text.split(",") if m],
        default=["reverse", "forward"],
        help="comma-separated, of reverse and forward (default both, in that order)",
    )
    args = parser.parse_args()
    if not args.modes or set(args.modes) - {"reverse", "forward"}:
        parser.error("--modes takes reverse, forward or both, comma-separated")
    from keyfob.app.bootstrap import init_vault
    from keyfob.settings import Settings

    with tempfile.TemporaryDirectory(prefix="keyfob-bench-fwd-") as tmp:
        work = Path(tmp)
        ca_file, pair = test_pki(work)
        up_port, kf_port, proxy_port = free_port(), free_port(), free_port()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import sys; sys.path.insert(0, {str(HERE)!r}); import forward; "
                    f"forward.upstream_main({up_port}, {str(pair)!r})",
                ]
            )
        ]
        data = work / "data"
        init = init_vault(Settings(data_dir=data))
        assert init.operator_token is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
        env.update(
            KEYFOB_LOG_LEVEL="warning",
            KEYFOB_PROXY_LISTEN=f"127.0.0.1:{proxy_port}",
            KEYFOB_TEST_RESOLVE=f"{HOST}:443=127.0.0.1:{up_port}",
            KEYFOB_UPSTREAM_CA_FILE=str(ca_file),
        )
        server = subprocess.Popen([sys.executable, "-c", _SERVE, str(data), str(kf_port)], env=env)
        procs.append(server)
        try:
            tokens, trust = setup(kf_port, init.operator_token.reveal(), work)
            result = uvloop.run(measure(args, proxy_port, kf_port, tokens, trust, server.pid))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)
    print(json.dumps(result, indent=2))
    return 0


def setup(kf_port: int, operator_token: str, work: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    url = f"http://127.0.0.1:{kf_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("keyfob did not start")
        time.sleep(0.1)
    auth = {"Authorization": f"Bearer {operator_token}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as api:
        provider, environment, name = SET_PATH.split("/")
        profile = {
            "base_url": f"https://{HOST}",
            "hosts": [HOST],
            "inject": {"kind": "bearer", "key": "API_KEY"},
        }
        api.post(
            "/v1/secret-sets",
            json={
                "provider": provider,
                "environment": environment,
                "name": name,
                "entries": {"API_KEY": KEY},
                "profile": profile,
            },
        ).raise_for_status()
        agent = api.post("/v1/agents", json={"name": "bench"}).json()
        api.post(
            "/v1/grants",
            json={
                "agent": "bench",
                "secret_set": SET_PATH,
                "scopes": ["workflow"],
                "max_lease_ttl": 86_400,
            },
        ).raise_for_status()
        kfa = {"Authorization": f"Bearer {agent['token']}"}
        lease = api.post(
            "/v1/leases",
            headers=kfa,
            json={"secret_set": SET_PATH, "scope": "workflow", "ttl": 86_400},
        ).json()["token"]
        credential = api.post(
            "/v1/leases",
            headers=kfa,
            json={"secret_sets": [SET_PATH], "scope": "workflow", "ttl": 86_400},
        ).json()["token"]
        ca = api.get("/v1/ca", headers=kfa).json()["certificate"]
    trust = ssl.create_default_context(cadata=ca)
    return {"lease": lease, "credential": credential}, trust


if __name__ == "__main__":
    sys.exit(main())
