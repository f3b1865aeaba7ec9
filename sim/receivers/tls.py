"""A throw-away certificate authority and server certificate for local HTTPS receivers.

The `pagerduty` client refuses non-https base URLs, so the local PagerDuty receiver speaks TLS. At
start-up this module runs the `openssl` command line tool to make, in a temporary directory:
a CA (key + self-signed certificate) and a server certificate for 127.0.0.1, ::1 and localhost
signed by it. The server loads the certificate chain; clients trust exactly the CA file — the
client's own `verify=` SSLContext, never a process-wide switch such as SSL_CERT_FILE or disabling
verification.

A CA plus a leaf (rather than one self-signed leaf) because strict X.509 checking, the default in
newer Python and OpenSSL, rejects a leaf that is its own trust anchor without CA extensions.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "/usr/bin/openssl"


class TlsSetupError(RuntimeError):
    """openssl is missing or failed; carries its stderr."""


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the generated files; they live until `cleanup()`."""

    directory: Path
    ca_file: Path
    """PEM CA certificate: what clients trust."""
    cert_file: Path
    """PEM server certificate followed by the CA (the chain the server presents)."""
    key_file: Path
    """PEM server private key."""

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for the server side (aiohttp's `ssl_context=`)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext that verifies the server against this CA only (hostname checked too)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(args: list[str], *, cwd: Path) -> None:
    openssl = OPENSSL if Path(OPENSSL).exists() else shutil.which("openssl")
    if openssl is None:
        raise TlsSetupError("the openssl command is needed to make a test certificate but was not found")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise TlsSetupError(f"openssl {args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def make_local_tls(directory: Path | None = None) -> TlsMaterial:
    """Generate a CA and a 127.0.0.1/localhost server certificate (blocking: run it in a thread)."""
    where = Path(tempfile.mkdtemp(prefix="rollguard-tls-")) if directory is None else directory
    where.mkdir(parents=True, exist_ok=True)
    (where / "server.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n",
        encoding="utf-8",
    )
    try:
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rollguard local test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], cwd=where)
        _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], cwd=where)
        _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
              "-out", "server.pem", "-days", "2", "-extfile", "server.ext"], cwd=where)
    except BaseException:
        if directory is None:
            shutil.rmtree(where, ignore_errors=True)
        raise
    chain = where / "chain.pem"
    chain.write_text((where / "server.pem").read_text() + (where / "ca.pem").read_text())
    return TlsMaterial(directory=where, ca_file=where / "ca.pem", cert_file=chain, key_file=where / "server.key")
