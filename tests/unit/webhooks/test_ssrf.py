"""The SSRF guard's decisions: URL policy, address policy, vetting resolved names.

No test here opens a connection: names resolve through fake resolvers, and public
addresses are only judged, never connected to (the connect path is tested against
loopback in tests/integration/test_ssrf_clients.py).
"""

from __future__ import annotations

import ipaddress
import pickle
import socket
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress.errors import ButtressError, ConfigError, is_transient
from buttress.webhooks import ssrf
from buttress.webhooks.ssrf import (
    AddressPolicy,
    CheckedURL,
    SSRFError,
    UnsafeAddress,
    UnsafeURL,
    address_refusal,
    check_address,
    check_url,
    vet,
    vet_sync,
)

POLICY = AddressPolicy()

# --------------------------------------------------------------------------- the corpus

# URLs whose host is, or encodes, an internal address: every one is refused by
# check_url before anything is resolved.
REFUSED_URLS = [
    # loopback, the usual ways and the encoded ways
    "http://127.0.0.1/",
    "http://127.0.0.1:80/",
    "https://127.255.255.254/",
    "http://127.0.0.1./",
    "http://2130706433/",  # decimal
    "http://017700000001/",  # octal
    "http://0x7f000001/",  # hex
    "http://0x7f.1/",  # hex, short
    "http://0x7F.0x0.0x0.0x1/",  # hex per octet
    "http://0177.0.0.1/",  # octal first octet
    "http://0177.1/",  # octal, short
    "http://127.1/",  # short
    "http://127.0.1/",  # short
    "http://127.000.000.001/",  # leading zeros (octal to inet_aton)
    "http://00000000177.0.0.1/",
    "http://0x7f.0.0.1./",
    "http://1.2.3.4.5/",  # ends in a number, not an address
    "http://1/",
    "http://0/",
    "http://0x/",
    "http://１２７．０．０．１/",  # full-width digits and dots (UTS 46 maps them)
    "http://127。0。0。1/",  # ideographic full stops
    # unspecified
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://[::]/",
    # IPv6 loopback in its forms
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[0000::1]/",
    "http://[::1]:443/",
    # IPv4 embedded in IPv6
    "http://[::ffff:127.0.0.1]/",  # mapped
    "http://[::ffff:7f00:1]/",  # mapped, hex
    "http://[0:0:0:0:0:ffff:169.254.169.254]/",  # mapped metadata
    "http://[::ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated)
    "http://[::8.8.8.8]/",  # IPv4-compatible, even of a public address
    "http://[::ffff:0:127.0.0.1]/",  # IPv4-translated (SIIT)
    "http://[64:ff9b::127.0.0.1]/",  # NAT64
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b:1::808:808]/",  # local-use NAT64
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2002:c0a8:101::1]/",  # 6to4 of 192.168.1.1
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "http://[2001:0:7f00:1::1]/",  # Teredo, server 127.0.0.1
    # private and link-local
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://169.254.170.2/v2/credentials",  # ECS task metadata
    "http://169.254.0.1/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",  # with a zone id
    "http://[fc00::1]/",  # unique local
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6 (unique local)
    "http://[fec0::1]/",  # site-local
    # CGNAT, benchmarking, documentation, reserved, multicast, cloud
    "http://100.64.0.1/",
    "http://100.100.100.200/",  # Alibaba metadata (in CGNAT)
    "http://100.127.255.255/",
    "http://198.18.0.1/",
    "http://198.19.255.255/",
    "http://192.0.0.192/",  # Oracle metadata (IETF protocol assignments)
    "http://192.0.2.1/",
    "http://198.51.100.1/",
    "http://203.0.113.1/",
    "http://192.88.99.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://168.63.129.16/",  # Azure WireServer
    "http://[ff02::1]/",
    "http://[2001:db8::1]/",
    "http://[2001:2::1]/",
    "http://[3fff::1]/",
    "http://[100::1]/",
    "http://[4000::1]/",  # outside 2000::/3
]

# URLs refused for their form, whatever the host would resolve to.
MALFORMED_URLS = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com:70/",
    "javascript:alert(1)",
    "dict://example.com:11211/",
    "//example.com/",
    "example.com/hook",
    "http:///hook",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "http://example.com@127.0.0.1/",
    "http://127.0.0.1#@example.com/",
    "http://example.com\\@127.0.0.1/",
    "http://exa mple.com/",
    "http://example.com\t/",
    "http://example.com:8080/",
    "http://example.com:22/",
    "http://example.com:0/",
    "http://example.com:65536/",
    "http://example.com:+80/",
    "http://example.com:８０/",
    "http://[::1/",
    "http://::1/",
    "http://[example.com]/",
    "http://%31%32%37.0.0.1/",
    "http://exa_mple-.com/",
    "http://-example.com/",
    "http://" + "a" * 64 + ".com/",
    "http://" + ".".join(["abcdefghi"] * 26) + ".com/",  # 263 characters
    "http://example..com/",
    "http://" + "\u00ad" * 2000 + "example.com/",  # soft hyphens: IDNA drops them
]


def test_the_corpus_is_large() -> None:
    assert len(REFUSED_URLS) + len(MALFORMED_URLS) >= 60
    assert len(REFUSED_URLS) >= 60


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_internal_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, POLICY)
    assert isinstance(info.value, SSRFError)


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url, POLICY)


def _host_of(url: str) -> str:
    netloc = url.split("//", 1)[1].split("/", 1)[0]
    if netloc.startswith("["):
        return netloc[1 : netloc.index("]")].replace("%25", "%")
    return netloc.rpartition(":")[0] if netloc.count(":") == 1 else netloc


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_vet_refuses_the_same_hosts_without_resolving(url: str) -> None:
    async def no_dns(host: str, port: int) -> Sequence[str]:
        raise AssertionError(f"{host!r} was resolved")

    with pytest.raises(UnsafeAddress):
        await vet(_host_of(url), 80, POLICY, resolver=no_dns)
    with pytest.raises(UnsafeAddress):
        vet_sync(_host_of(url), 80, POLICY, resolver=lambda host, port: [])


# Names that resolve (through a fake DNS) to internal addresses.
INTERNAL_ANSWERS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "metadata.google.internal": ["169.254.169.254"],
    "redis": ["10.0.0.7"],
    "db.corp.example": ["192.168.1.20"],
    "k8s-api.internal": ["172.20.0.1"],
    "cgnat.example": ["100.64.1.1"],
    "v6-loopback.example": ["::1"],
    "v6-ula.example": ["fd12:3456:789a::1"],
    "v6-linklocal.example": ["fe80::1%eth0"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.example": ["2002:0a00:0001::1"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],  # one public, one internal
    "mixed-v6.example": ["2606:4700:4700::1111", "fc00::5"],
    "multicast.example": ["224.0.0.251"],
    "zero.example": ["0.0.0.0"],
    "bench.example": ["198.18.0.10"],
    "garbage.example": ["not-an-ip"],
}


class FakeDNS:
    """Answers from a table; counts the questions."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    def sync(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        return self.sync(host, port)


@pytest.mark.parametrize("name", sorted(INTERNAL_ANSWERS))
async def test_names_resolving_to_internal_addresses_are_refused(name: str) -> None:
    dns = FakeDNS(INTERNAL_ANSWERS)
    with pytest.raises(UnsafeAddress) as info:
        await vet(name, 443, POLICY, resolver=dns)
    assert info.value.host == name
    assert dns.asked == [(name, 443)]
    with pytest.raises(UnsafeAddress):
        vet_sync(name, 443, POLICY, resolver=dns.sync)
    # The URL check alone does not resolve: the name passes it.
    assert check_url(f"https://{name}/hook", POLICY).address is None


async def test_one_internal_address_among_public_ones_refuses_the_name() -> None:
    dns = FakeDNS({"rebind.example": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(UnsafeAddress) as info:
        await vet("rebind.example", 443, POLICY, resolver=dns)
    assert info.value.address == "127.0.0.1"
    assert info.value.reason == "loopback"


async def test_a_name_that_rebinds_between_two_vets_is_refused_the_second_time() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return next(answers)

    assert await vet("rebind.example", 443, POLICY, resolver=rebinding) == ["93.184.216.34"]
    with pytest.raises(UnsafeAddress):
        await vet("rebind.example", 443, POLICY, resolver=rebinding)


# --------------------------------------------------------------------------- allowed

PUBLIC_URLS = [
    ("https://example.com/hook", "example.com", 443, None),
    ("https://Example.COM./hook?x=1#f", "example.com.", 443, None),
    ("http://hooks.example.org:80/a/b", "hooks.example.org", 80, None),
    ("https://_acme.example.com/", "_acme.example.com", 443, None),
    ("https://93.184.216.34/", "93.184.216.34", 443, "93.184.216.34"),
    ("https://8.8.8.8:443/x", "8.8.8.8", 443, "8.8.8.8"),
    ("http://1.1.1.1/", "1.1.1.1", 80, "1.1.1.1"),
    ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111", 443, "2606:4700:4700::1111"),
    ("https://[::ffff:8.8.8.8]/", "::ffff:808:808", 443, "::ffff:808:808"),  # mapped public
    ("https://[64:ff9b::808:808]/", "64:ff9b::808:808", 443, "64:ff9b::808:808"),
    ("https://[2002:808:808::1]/", "2002:808:808::1", 443, "2002:808:808::1"),
    ("https://bücher.example/", "xn--bcher-kva.example", 443, None),
    ("HTTPS://EXAMPLE.com", "example.com", 443, None),
    ("https://172.32.0.1/", "172.32.0.1", 443, "172.32.0.1"),  # just outside 172.16/12
    ("https://100.128.0.1/", "100.128.0.1", 443, "100.128.0.1"),  # just outside CGNAT
    ("https://198.20.0.1/", "198.20.0.1", 443, "198.20.0.1"),  # just outside 198.18/15
    ("https://11.0.0.1/", "11.0.0.1", 443, "11.0.0.1"),
]


@pytest.mark.parametrize(("url", "host", "port", "address"), PUBLIC_URLS)
def test_public_urls_are_accepted(url: str, host: str, port: int, address: str | None) -> None:
    checked = check_url(url, POLICY)
    assert isinstance(checked, CheckedURL)
    assert (checked.host, checked.port, checked.address) == (host, port, address)
    assert checked.scheme in ("http", "https")
    assert str(checked) == checked.url
    # normalised: what check_url returns passes check_url again, unchanged
    assert check_url(checked.url, POLICY) == checked


def test_check_url_normalises() -> None:
    assert check_url("HTTPS://Example.COM:443", POLICY).url == "https://example.com/"
    assert check_url("https://[2606:4700::1]:443/p?q#f", POLICY).url == (
        "https://[2606:4700::1]/p?q#f"
    )
    wide = AddressPolicy(ports=None)
    assert check_url("http://example.com:8080/x", wide).url == "http://example.com:8080/x"


PUBLIC_ADDRESSES = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo with public server and client
]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
async def test_names_resolving_to_public_addresses_are_accepted(address: str) -> None:
    dns = FakeDNS({"hooks.example.com": [address, address]})
    expected = [str(ipaddress.ip_address(address))]
    assert await vet("hooks.example.com", 443, POLICY, resolver=dns) == expected
    assert vet_sync("hooks.example.com", 443, POLICY, resolver=dns.sync) == expected
    assert address_refusal(ipaddress.ip_address(address)) is None


async def test_a_literal_address_is_vetted_without_resolving() -> None:
    dns = FakeDNS({})
    assert await vet("8.8.8.8", 443, POLICY, resolver=dns) == ["8.8.8.8"]
    assert await vet("[2606:4700::1]", 443, POLICY, resolver=dns) == ["2606:4700::1"]
    assert dns.asked == []


async def test_vet_resolves_the_ascii_name_and_lets_dns_errors_through() -> None:
    dns = FakeDNS({"xn--bcher-kva.example": ["93.184.216.34"]})
    assert await vet("bücher.example", 443, POLICY, resolver=dns) == ["93.184.216.34"]
    assert dns.asked == [("xn--bcher-kva.example", 443)]
    with pytest.raises(socket.gaierror):
        await vet("nowhere.example", 443, POLICY, resolver=dns)


async def test_an_empty_answer_is_a_resolution_error() -> None:
    dns = FakeDNS({"empty.example": []})
    with pytest.raises(socket.gaierror) as info:
        await vet("empty.example", 443, POLICY, resolver=dns)
    assert is_transient(info.value)


async def test_the_default_resolver_is_the_system_one() -> None:
    # localhost is in every hosts file: resolved, then refused as loopback.
    with pytest.raises(UnsafeAddress) as info:
        await vet("localhost", 80, POLICY)
    assert "loopback" in info.value.reason
    with pytest.raises(UnsafeAddress):
        vet_sync("localhost", 80, POLICY)
    assert await vet("localhost", 80, AddressPolicy(["127.0.0.0/8", "::1/128"]))


# --------------------------------------------------------------------------- allowlist


def test_the_allowlist_is_the_way_around() -> None:
    local = AddressPolicy(["127.0.0.0/8", "::1", "10.1.2.3"])
    assert check_url("http://127.0.0.1:8000/hook", local).address == "127.0.0.1"
    assert check_url("http://[::1]:9/", local).address == "::1"
    assert check_url("http://10.1.2.3/", local).address == "10.1.2.3"
    # an allowed IPv4 network allows its IPv4-mapped form, nothing else
    assert check_address(ipaddress.ip_address("::ffff:127.0.0.5"), local) is None
    for refused in ("10.1.2.4", "169.254.169.254", "192.168.0.1", "::2"):
        assert check_address(ipaddress.ip_address(refused), local) is not None
    with pytest.raises(UnsafeURL):
        check_url("http://10.1.2.4/", local)
    # encodings stay refused: the allowlist is for addresses, written canonically
    with pytest.raises(UnsafeURL):
        check_url("http://2130706433/", local)


async def test_the_allowlist_applies_to_resolved_names() -> None:
    local = AddressPolicy(["127.0.0.0/8", "::1/128"])
    dns = FakeDNS({"dev.local": ["127.0.0.1", "::1"], "mix.local": ["127.0.0.1", "10.0.0.1"]})
    assert await vet("dev.local", 80, local, resolver=dns) == ["127.0.0.1", "::1"]
    with pytest.raises(UnsafeAddress):
        await vet("mix.local", 80, local, resolver=dns)


def test_an_allowlisted_literal_may_use_any_port_a_name_may_not() -> None:
    local = AddressPolicy(["127.0.0.0/8"])
    assert check_url("http://127.0.0.1:54321/", local).port == 54321
    with pytest.raises(UnsafeURL, match="port 54321"):
        check_url("http://localhost:54321/", local)
    assert check_url("http://localhost:54321/", AddressPolicy(ports=[54321])).port == 54321


# --------------------------------------------------------------------------- policy


def test_url_policy_options() -> None:
    https_only = AddressPolicy(schemes=["HTTPS"])
    assert https_only.schemes == ("https",)
    with pytest.raises(UnsafeURL, match="scheme 'http'"):
        check_url("http://example.com/", https_only)
    assert check_url("https://example.com:8443/", AddressPolicy(ports=[443, 8443])).port == 8443
    short = AddressPolicy(max_host_length=20)
    assert check_url("https://example.com/", short)
    with pytest.raises(UnsafeURL, match="longer than 20"):
        check_url("https://hooks.subscribers.example.com/", short)
    assert check_url("https://" + ".".join(["a" * 63] * 3) + ".com/", POLICY)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"allow": "127.0.0.0/8"}, "allow"),
        ({"allow": ["127.0.0.1/8"]}, "allow[0]"),  # host bits set: a typo?
        ({"allow": ["localhost"]}, "allow[0]"),
        ({"allow": ["10.0.0.0/8", 42]}, "allow[1]"),
        ({"schemes": []}, "schemes"),
        ({"schemes": "https"}, "schemes"),
        ({"schemes": ["ftp"]}, "schemes"),
        ({"ports": [0]}, "ports"),
        ({"ports": [65536]}, "ports"),
        ({"ports": [True]}, "ports"),
        ({"ports": 443}, "ports"),
        ({"max_host_length": 0}, "max_host_length"),
        ({"max_host_length": 300}, "max_host_length"),
    ],
)
def test_bad_policies_are_refused_with_the_key(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        AddressPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


def test_policy_is_frozen_and_normalised() -> None:
    policy = AddressPolicy(["10.0.0.0/8"], ports=[443])
    assert policy.allow == ("10.0.0.0/8",)
    assert policy.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert policy.ports == (443,)
    assert policy == AddressPolicy(("10.0.0.0/8",), ports=(443,))
    with pytest.raises(AttributeError):
        policy.allow = ()  # type: ignore[misc]


def test_check_url_takes_only_strings() -> None:
    with pytest.raises(TypeError):
        check_url(b"http://example.com/", POLICY)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors


def test_errors_are_permanent_buttress_errors() -> None:
    for error in (UnsafeURL("http://x/", "why"), UnsafeAddress("x", "127.0.0.1", "loopback")):
        assert isinstance(error, SSRFError)
        assert isinstance(error, ButtressError)
        assert error.transient is False
        assert not is_transient(error)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)


def test_messages_name_the_origin_but_not_the_path_or_credentials() -> None:
    with pytest.raises(UnsafeURL) as info:
        check_url("http://alice:s3cret@example.com/hook?token=abc", POLICY)
    message = str(info.value)
    assert "example.com" in message
    assert "s3cret" not in message
    assert "token" not in message
    assert info.value.url == "http://alice:s3cret@example.com/hook?token=abc"
    with pytest.raises(UnsafeURL) as info:
        check_url("http://169.254.169.254/latest/meta-data/iam?token=abc", POLICY)
    assert "metadata" in str(info.value)
    assert "token" not in str(info.value)


def test_reasons_name_the_category() -> None:
    def why(text: str) -> str | None:
        return address_refusal(ipaddress.ip_address(text))

    assert why("127.0.0.1") == "loopback"
    assert why("169.254.169.254") == "link-local (cloud metadata service)"
    assert "CGNAT" in (why("100.64.0.1") or "")
    assert "benchmarking" in (why("198.18.0.1") or "")
    assert why("::") == "unspecified"
    assert "unique local" in (why("fd00::1") or "")
    assert "site-local" in (why("fec0::1") or "")
    assert (why("::ffff:10.0.0.1") or "").startswith("IPv4-mapped form of 10.0.0.1")
    assert (why("2001:0:4136:e378:8000:63bf:80ff:fffe") or "").startswith("Teredo")
    assert why("4000::1") == "reserved (not global unicast)"


def test_the_facade_exports_what_it_documents() -> None:
    for name in ssrf.__all__:
        assert getattr(ssrf, name) is not None
    assert set(ssrf.__all__) <= set(dir(ssrf))
    with pytest.raises(AttributeError):
        _ = ssrf.NoSuchName


# --------------------------------------------------------------------------- properties

REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


def _encodings(v4: ipaddress.IPv4Address) -> list[str]:
    """The ways a URL can name ``v4``: numeric shorthands and IPv6 embeddings."""
    n = int(v4)
    a, b, c, d = v4.packed
    return [
        f"http://{n}/",
        f"http://{n:#x}/",
        f"http://0{n:o}/",
        f"http://{a}.{n & 0xFFFFFF}/",
        f"http://{a}.{b}.{n & 0xFFFF}/",
        f"http://{a:#x}.{b:#x}.{c:#x}.{d:#x}/",
        f"http://0{a:o}.{b}.{c}.{d}/",
        f"http://[::ffff:{v4}]/",
        f"http://[::ffff:{n >> 16:x}:{n & 0xFFFF:x}]/",
        f"http://[64:ff9b::{v4}]/",
        f"http://[2002:{n >> 16:x}:{n & 0xFFFF:x}::1]/",
        f"http://[::ffff:0:{v4}]/",
    ]


@given(data=st.data(), network=st.sampled_from(REFUSED_V4))
def test_every_encoding_of_a_refused_address_is_refused(data: st.DataObject, network: str) -> None:
    net = ipaddress.IPv4Network(network)
    offset = data.draw(st.integers(0, net.num_addresses - 1))
    v4 = net[offset]
    assert check_address(v4, POLICY) is not None
    for url in [f"http://{v4}/", *_encodings(v4)]:
        with pytest.raises(UnsafeURL):
            check_url(url, POLICY)


@given(st.integers(0, 2**32 - 1))
def test_a_public_address_is_accepted_canonically_and_refused_in_shorthand(n: int) -> None:
    v4 = ipaddress.IPv4Address(n)
    if address_refusal(v4) is not None:
        return
    assert check_url(f"http://{v4}/", POLICY).address == str(v4)
    encodings = _encodings(v4)
    for url in encodings[:7]:  # numeric shorthands: refused whatever they encode
        if url != f"http://{v4}/":
            with pytest.raises(UnsafeURL):
                check_url(url, POLICY)
    for url in encodings[7:]:  # IPv6 embeddings of a public address are public
        assert check_url(url, POLICY).address is not None


def test_policy_from_a_configuration_table() -> None:
    table = {"allow": ["10.0.0.0/8"], "ports": [443, 8443], "max-host-length": 100}
    policy = AddressPolicy.from_mapping(table, path="webhooks.ssrf")
    assert policy == AddressPolicy(["10.0.0.0/8"], ports=(443, 8443), max_host_length=100)
    assert AddressPolicy.toml_keys() == ("allow", "schemes", "ports", "max_host_length")
    with pytest.raises(ConfigError) as info:
        AddressPolicy.from_mapping({"allow": ["10.0.0.1/8"]}, path="webhooks.ssrf")
    assert info.value.path == "webhooks.ssrf.allow[0]"
    with pytest.raises(ConfigError) as info:
        AddressPolicy.from_mapping({"networks": []}, path="webhooks.ssrf")
    assert info.value.path == "webhooks.ssrf.networks"
    wider = policy.replace(ports=None)
    assert wider.ports is None
    assert wider.networks == policy.networks
    with pytest.raises(ConfigError):
        policy.replace(schemes=["gopher"])
