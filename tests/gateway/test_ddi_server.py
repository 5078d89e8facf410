"""The DDI HTTP driver on a real socket with TLS (the site's certificate), the core answering: a poll, the
body limit, a download range from a file."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest

from common.effects import Append
from gateway.command_relay import CommandRelay
from gateway.ddi.core import DdiDevices
from gateway.ddi.events import DdiResponse
from gateway.ddi.server import DdiServer, tls_context
from gateway.ddi.tokens import DdiTokens, token_hash

pytestmark = pytest.mark.integration


def site_cert(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-1.site-1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = tmp / "site.pem", tmp / "site.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return c, k


def test_poll_over_tls_body_limit_and_plain_http_refused(tmp_path: Path) -> None:
    cert, key = site_cert(tmp_path)
    relay = CommandRelay(None, connected=lambda d: None)
    core = DdiDevices("gw-1", "site-1", relay, DdiTokens("site-1", 1, {"ddi-1": (token_hash("tok"), "hw")}), poll_s=9)

    async def main() -> None:
        def feed(req) -> None:  # the core's effects run at once: appends are durable, answers go back
            for e in core.request(req, 0.0):
                if isinstance(e, DdiResponse):
                    server.respond(e)
                elif isinstance(e, Append) and e.token[0] == "ddi":
                    for x in core.persisted(e.token):
                        if isinstance(x, DdiResponse):
                            server.respond(x)

        server = DdiServer("127.0.0.1:0", feed, lambda sha: tmp_path / sha, tls=tls_context(str(cert), str(key)),
                           max_body=1024)
        url = await server.start()
        assert url.startswith("https://127.0.0.1:")
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=ctx) as client:
                r = await client.get(f"{url}/default/controller/v1/ddi-1", headers={"Authorization": "TargetToken tok"})
                assert r.status_code == 200 and r.json()["config"]["polling"]["sleep"] == "00:00:09"
                r = await client.get(f"{url}/default/controller/v1/ddi-1", headers={"Authorization": "TargetToken no"})
                assert r.status_code == 401
                r = await client.put(f"{url}/default/controller/v1/ddi-1/configData", content=b"x" * 5000,
                                     headers={"Authorization": "TargetToken tok", "Content-Type": "application/json"})
                assert r.status_code == 413 and "1024" in r.text
                r = await client.put(f"{url}/default/controller/v1/ddi-1/configData", json={"data": {"a": "b"}},
                                     headers={"Authorization": "TargetToken tok"})
                assert r.status_code == 200
            async with httpx.AsyncClient() as plain:  # TLS only: a plain request gets no HTTP answer
                with pytest.raises(httpx.HTTPError):
                    await plain.get(url.replace("https", "http") + "/default/controller/v1/ddi-1")
        finally:
            await server.stop()

    asyncio.run(main())
