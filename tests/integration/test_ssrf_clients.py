"""The SSRF guard on the wire: aiohttp, httpx sync and httpx async against loopback.

Only loopback addresses are ever connected to. Loopback is refused by the default
policy, so each test allowlists exactly the loopback addresses it means to reach; a
fake resolver stands for DNS. In the rebinding tests 127.0.0.2 plays the public
address (allowlisted) and 127.0.0.1 the internal one (not allowlisted): a server on
each, same port, records every request, so a test can assert that nothing ever
reached 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import pytest

from buttress.errors import is_transient
from buttress.webhooks.ssrf import (
    AddressPolicy,
    AsyncGuardedTransport,
    GuardedTransport,
    UnsafeAddress,
    UnsafeURL,
    guarded_connector,
    vet,
)

from ._http_server import ScriptedServer

pytestmark = pytest.mark.integration

KINDS = ["aiohttp", "httpx-sync", "httpx-async"]


# --------------------------------------------------------------------------- servers


@dataclass
class Seen:
    sni: str | None
    host: str
    path: str


@dataclass
class RecordingServer:
    """A small threaded HTTP/1.1 server on ``(address, port)`` that records requests.

    Answers 200 with its own address as the body, or for ``/redirect/<url>`` a 302
    to ``<url>``; closes each connection after one answer. With ``tls``, it records
    the TLS server name (SNI) each client sent.
    """

    address: str
    port: int = 0
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._sock = socket.socket(family)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.address, self.port))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        names: list[str | None] = [None]
        try:
            if self.tls is not None:
                context = self.tls

                def on_sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
                    names[0] = name

                context.sni_callback = on_sni
                conn = context.wrap_socket(conn, server_side=True)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:])
                }
                length = int(headers.get("content-length", "0"))
                while len(body) < length:
                    body += conn.recv(65536)
                with self._lock:
                    self.seen.append(Seen(names[0], headers.get("host", ""), path))
                if path.startswith("/redirect/"):
                    location = urllib.parse.unquote(path.removeprefix("/redirect/"))
                    status, extra, payload = "302 Found", f"location: {location}\r\n", b""
                else:
                    status, extra, payload = "200 OK", "", self.address.encode()
                conn.sendall(
                    f"HTTP/1.1 {status}\r\n{extra}content-length: {len(payload)}\r\n"
                    "connection: close\r\n\r\n".encode()
                    + payload
                )
        except (OSError, ssl.SSLError):
            return

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def twins() -> Iterator[tuple[RecordingServer, RecordingServer]]:
    """``(public, internal)``: servers on 127.0.0.2 and 127.0.0.1, on the same port."""
    for _ in range(50):
        public = RecordingServer("127.0.0.2")
        try:
            internal = RecordingServer("127.0.0.1", public.port)
        except OSError:
            public.close()
            continue
        break
    else:  # pragma: no cover - the machine is out of ports
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")
    yield public, internal
    public.close()
    internal.close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    running = ScriptedServer().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for the name ``hooks.test`` only (no IP in it)."""
    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - openssl is on the dev and CI machines
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=hooks.test",
            "-addext",
            "subjectAltName=DNS:hooks.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# --------------------------------------------------------------------------- DNS


class FakeDNS:
    """Answers from a script per name: one list of addresses per question (the last
    repeats). Counts the questions."""

    def __init__(self, **script: list[list[str]]) -> None:
        self.script = {name.replace("_", "."): answers for name, answers in script.items()}
        self.asked: list[str] = []

    def sync(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        answers = self.script.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        index = min(self.asked.count(host), len(answers)) - 1
        return answers[index]

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        return self.sync(host, port)


# --------------------------------------------------------------------------- clients


class Client:
    """One guarded client of ``kind``; ``send`` POSTs and returns (status, body)."""

    def __init__(
        self,
        kind: str,
        policy: AddressPolicy,
        dns: FakeDNS | None,
        *,
        tls: ssl.SSLContext | None = None,
        follow: bool = False,
        dns_cache: bool = True,
    ) -> None:
        self.kind = kind
        self.follow = follow
        verify: ssl.SSLContext | bool = tls if tls is not None else True
        self._aiohttp: aiohttp.ClientSession | None = None
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        if kind == "aiohttp":
            connector = guarded_connector(policy, resolver=dns, ssl=verify, use_dns_cache=dns_cache)
            self._aiohttp = aiohttp.ClientSession(connector=connector)
        elif kind == "httpx-sync":
            transport = GuardedTransport(policy, resolver=dns.sync if dns else None, verify=verify)
            self._sync = httpx.Client(transport=transport, follow_redirects=follow)
        else:
            atransport = AsyncGuardedTransport(policy, resolver=dns, verify=verify)
            self._async = httpx.AsyncClient(transport=atransport, follow_redirects=follow)

    async def send(self, url: str, **kwargs: object) -> tuple[int, str]:
        if self._aiohttp is not None:
            async with self._aiohttp.post(
                url,
                data=b"{}",
                allow_redirects=self.follow,
                **kwargs,  # type: ignore[arg-type]
            ) as response:
                return response.status, await response.text()
        if self._sync is not None:
            # The servers run in threads: a blocking call here does not starve them.
            reply = self._sync.post(url, content=b"{}")
            return reply.status_code, reply.text
        assert self._async is not None
        reply = await self._async.post(url, content=b"{}")
        return reply.status_code, reply.text

    async def aclose(self) -> None:
        if self._aiohttp is not None:
            await self._aiohttp.close()
        if self._sync is not None:
            self._sync.close()
        if self._async is not None:
            await self._async.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.aclose()


def make(made: list[Client], *args: object, **kwargs: object) -> Client:
    client = Client(*args, **kwargs)  # type: ignore[arg-type]
    made.append(client)
    return client


PUBLIC_ONLY = AddressPolicy(["127.0.0.2/32"], ports=None)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", KINDS)
async def test_loopback_is_refused_unless_allowlisted(
    kind: str, scripted: ScriptedServer, clients: list[Client]
) -> None:
    url = scripted.script(200)
    refusing = make(clients, kind, AddressPolicy(ports=None), None)
    with pytest.raises(UnsafeURL, match="loopback"):
        await refusing.send(url)
    assert scripted.seen(url) == 0
    allowing = make(clients, kind, AddressPolicy(["127.0.0.0/8"]), None)
    assert (await allowing.send(url))[0] == 200
    assert scripted.seen(url) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_name_is_resolved_vetted_and_keeps_the_host_header(
    kind: str, twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    dns = FakeDNS(hooks_test=[["127.0.0.2"]], inside_test=[["127.0.0.1"]])
    client = make(clients, kind, PUBLIC_ONLY, dns)
    assert await client.send(f"http://hooks.test:{public.port}/a") == (200, "127.0.0.2")
    assert [(s.host, s.path) for s in public.requests()] == [(f"hooks.test:{public.port}", "/a")]
    with pytest.raises(UnsafeAddress) as info:
        await client.send(f"http://inside.test:{public.port}/b")
    assert info.value.address == "127.0.0.1"
    assert internal.requests() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_tls_keeps_the_server_name_and_checks_the_certificate_against_it(
    kind: str, certificate: tuple[Path, Path], clients: list[Client]
) -> None:
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = RecordingServer("127.0.0.2", tls=server_context)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        dns = FakeDNS(hooks_test=[["127.0.0.2"]])
        client = make(clients, kind, PUBLIC_ONLY, dns, tls=trust)
        assert await client.send(f"https://hooks.test:{server.port}/tls") == (200, "127.0.0.2")
        (seen,) = server.requests()
        assert seen.sni == "hooks.test"
        assert seen.host == f"hooks.test:{server.port}"
        # The certificate names hooks.test only: reached by its address, it fails the
        # check, so the success above means the name was what TLS verified.
        bare = make(clients, kind, PUBLIC_ONLY, None, tls=trust)
        with pytest.raises((aiohttp.ClientConnectorCertificateError, httpx.ConnectError)):
            await bare.send(f"https://127.0.0.2:{server.port}/tls")
    finally:
        server.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_an_answer_with_an_internal_address_is_refused_whole(
    kind: str, twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    dns = FakeDNS(rebind_test=[["127.0.0.2", "127.0.0.1"]])
    client = make(clients, kind, PUBLIC_ONLY, dns)
    with pytest.raises(UnsafeAddress):
        await client.send(f"http://rebind.test:{public.port}/")
    assert internal.requests() == []
    assert public.requests() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_rebinding_between_check_and_connect_is_refused(
    kind: str, twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    dns = FakeDNS(rebind_test=[["127.0.0.2"], ["127.0.0.1"]])
    # The check (at registration, say) sees the public address ...
    assert await vet("rebind.test", public.port, PUBLIC_ONLY, dns) == ["127.0.0.2"]
    # ... the delivery's own resolution sees the internal one, and is refused.
    client = make(clients, kind, PUBLIC_ONLY, dns)
    with pytest.raises(UnsafeAddress):
        await client.send(f"http://rebind.test:{public.port}/")
    assert internal.requests() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_rebinding_between_two_connections_is_refused(
    kind: str, twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    dns = FakeDNS(rebind_test=[["127.0.0.2"], ["127.0.0.1"]])
    client = make(clients, kind, PUBLIC_ONLY, dns, dns_cache=False)
    url = f"http://rebind.test:{public.port}/"
    assert await client.send(url) == (200, "127.0.0.2")
    with pytest.raises(UnsafeAddress):
        await client.send(url)  # a new connection (the server closed the first)
    assert len(public.requests()) == 1
    assert internal.requests() == []
    assert dns.asked == ["rebind.test", "rebind.test"]


async def test_aiohttp_keeps_connecting_to_the_vetted_answer_it_cached(
    twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    dns = FakeDNS(rebind_test=[["127.0.0.2"], ["127.0.0.1"]])
    client = make(clients, "aiohttp", PUBLIC_ONLY, dns)  # aiohttp's DNS cache on
    url = f"http://rebind.test:{public.port}/"
    for _ in range(3):
        assert await client.send(url) == (200, "127.0.0.2")
    assert dns.asked == ["rebind.test"]
    assert len(public.requests()) == 3
    assert internal.requests() == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", ["literal", "name"])
async def test_redirects_are_vetted_again(
    kind: str,
    target: str,
    twins: tuple[RecordingServer, RecordingServer],
    clients: list[Client],
) -> None:
    public, internal = twins
    dns = FakeDNS(hooks_test=[["127.0.0.2"]], inside_test=[["127.0.0.1"]])
    host = "127.0.0.1" if target == "literal" else "inside.test"
    inward = urllib.parse.quote(f"http://{host}:{internal.port}/stolen", safe="")
    url = f"http://hooks.test:{public.port}/redirect/{inward}"
    # Not followed (the default for webhooks): the 302 is the answer.
    plain = make(clients, kind, PUBLIC_ONLY, dns)
    assert (await plain.send(url))[0] == 302
    # Followed: the redirect's target is checked like any request, and refused.
    following = make(clients, kind, PUBLIC_ONLY, dns, follow=True)
    with pytest.raises(UnsafeURL if target == "literal" else UnsafeAddress):
        await following.send(url)
    assert internal.requests() == []
    assert len(public.requests()) == 2


async def test_aiohttp_refuses_a_proxy(
    twins: tuple[RecordingServer, RecordingServer], clients: list[Client]
) -> None:
    public, internal = twins
    client = make(clients, "aiohttp", PUBLIC_ONLY, FakeDNS(hooks_test=[["127.0.0.2"]]))
    with pytest.raises(UnsafeURL, match="proxy"):
        await client.send(
            f"http://hooks.test:{public.port}/", proxy=f"http://127.0.0.1:{internal.port}"
        )
    assert internal.requests() == []
    assert public.requests() == []


async def test_aiohttp_guarded_resolver_wraps_an_aiohttp_resolver(
    twins: tuple[RecordingServer, RecordingServer],
) -> None:
    from aiohttp.abc import AbstractResolver, ResolveResult

    from buttress.webhooks.ssrf import GuardedResolver

    class Table(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            address = {"hooks.test": "127.0.0.2", "inside.test": "127.0.0.1"}[host]
            return [
                ResolveResult(
                    hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
                )
            ]

        async def close(self) -> None:
            pass

    public, internal = twins
    guard = GuardedResolver(PUBLIC_ONLY, Table())
    assert [r["host"] for r in await guard.resolve("hooks.test", 80)] == ["127.0.0.2"]
    with pytest.raises(UnsafeAddress):
        await guard.resolve("inside.test", 80)
    with pytest.raises(UnsafeAddress):
        await guard.resolve("127.0.0.1", 80)
    with pytest.raises(UnsafeAddress):
        await guard.resolve("0x7f.1", 80)
    connector = aiohttp.TCPConnector(resolver=guard)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://hooks.test:{public.port}/") as response:
            assert response.status == 200
        with pytest.raises(UnsafeAddress):
            await session.get(f"http://inside.test:{internal.port}/")
    assert internal.requests() == []
    await guard.close()


async def test_the_default_resolvers_resolve_for_real(
    scripted: ScriptedServer, clients: list[Client]
) -> None:
    """``localhost`` through the system resolver: refused, then allowed by the list."""
    url = scripted.script(200).replace("127.0.0.1", "localhost")
    for kind in KINDS:
        refusing = make(clients, kind, AddressPolicy(ports=None), None)
        with pytest.raises(UnsafeAddress):
            await refusing.send(url)
    assert scripted.seen(url.replace("localhost", "127.0.0.1")) == 0
    for kind in KINDS:
        allowing = make(clients, kind, AddressPolicy(["127.0.0.0/8", "::1"], ports=None), None)
        assert (await allowing.send(url))[0] == 200
    assert scripted.seen(url.replace("localhost", "127.0.0.1")) == 3


def test_httpx_tries_the_next_vetted_address_when_one_refuses(
    twins: tuple[RecordingServer, RecordingServer],
) -> None:
    public, internal = twins
    # Nothing listens on 127.0.0.3: the connection goes on to 127.0.0.2, never to .1.
    dns = FakeDNS(hooks_test=[["127.0.0.3", "127.0.0.2"]])
    policy = AddressPolicy(["127.0.0.2/31"], ports=None)
    with httpx.Client(transport=GuardedTransport(policy, resolver=dns.sync)) as client:
        reply = client.get(f"http://hooks.test:{public.port}/")
    assert (reply.status_code, reply.text) == (200, "127.0.0.2")
    assert internal.requests() == []


async def test_httpx_refuses_unix_sockets() -> None:
    transport = AsyncGuardedTransport(PUBLIC_ONLY)
    backend = transport._pool._network_backend
    with pytest.raises(UnsafeURL):
        await backend.connect_unix_socket("/var/run/docker.sock")
    await transport.aclose()
    sync = GuardedTransport(PUBLIC_ONLY)
    with pytest.raises(UnsafeURL):
        sync._pool._network_backend.connect_unix_socket("/var/run/docker.sock")
    sync.close()


async def test_async_resolution_counts_in_the_connect_timeout(
    twins: tuple[RecordingServer, RecordingServer],
) -> None:
    public, _ = twins
    never = asyncio.Event()

    async def hanging(host: str, port: int) -> Sequence[str]:
        await never.wait()
        return []

    transport = AsyncGuardedTransport(PUBLIC_ONLY, resolver=hanging)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, connect=0.05)) as c:
        with pytest.raises(httpx.ConnectTimeout):
            await c.get(f"http://hooks.test:{public.port}/")


async def test_aiohttp_remembers_passed_urls_only_and_boundedly(
    twins: tuple[RecordingServer, RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from buttress.webhooks import _ssrf_aiohttp
    from buttress.webhooks._ssrf_policy import check_url as real_check

    public, internal = twins
    checked: list[str] = []

    def counting(url: str, policy: AddressPolicy) -> object:
        checked.append(url)
        return real_check(url, policy)

    monkeypatch.setattr(_ssrf_aiohttp, "check_url", counting)
    connector = _ssrf_aiohttp.GuardedConnector(PUBLIC_ONLY, use_dns_cache=False)
    connector.max_checked_urls = 2
    async with aiohttp.ClientSession(connector=connector) as session:
        urls = [f"http://127.0.0.2:{public.port}/{n}" for n in range(3)]
        for url in [urls[0], urls[0], urls[1], urls[1], urls[2], urls[0]]:
            async with session.post(url) as response:
                assert response.status == 200
        # checked once while remembered; the third URL filled the memory, so the
        # first one was checked again
        assert checked == [urls[0], urls[1], urls[2], urls[0]]
        assert len(connector._passed) <= 2
        refused = f"http://127.0.0.1:{internal.port}/"
        for _ in range(2):  # a refusal is never remembered as a pass
            with pytest.raises(UnsafeURL):
                await session.post(refused)
    assert checked[-2:] == [refused, refused]
    assert internal.requests() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_name_that_does_not_resolve_is_the_clients_usual_connect_error(
    kind: str, clients: list[Client]
) -> None:
    client = make(clients, kind, PUBLIC_ONLY, FakeDNS())
    expected = aiohttp.ClientConnectorDNSError if kind == "aiohttp" else httpx.ConnectError
    with pytest.raises(expected) as info:
        await client.send("http://nowhere.test/")
    causes: list[BaseException] = []
    cause: BaseException | None = info.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, socket.gaierror) for c in causes)
    assert is_transient(info.value)  # unlike a refusal, worth retrying


@pytest.mark.parametrize("kind", KINDS)
async def test_ipv6_answers_are_vetted_and_connected_to(kind: str, clients: list[Client]) -> None:
    try:
        server = RecordingServer("::1")
    except OSError:  # pragma: no cover - a machine without IPv6 loopback
        pytest.skip("no IPv6 loopback")
    try:
        dns = FakeDNS(hooks_test=[["::1"]])
        allowing = make(clients, kind, AddressPolicy(["::1"], ports=None), dns)
        assert await allowing.send(f"http://hooks.test:{server.port}/v6") == (200, "::1")
        assert [s.host for s in server.requests()] == [f"hooks.test:{server.port}"]
        refusing = make(clients, kind, PUBLIC_ONLY, dns)
        with pytest.raises(UnsafeAddress):
            await refusing.send(f"http://hooks.test:{server.port}/v6")
        with pytest.raises(UnsafeURL):
            await refusing.send(f"http://[::1]:{server.port}/v6")
        assert len(server.requests()) == 1
    finally:
        server.close()
