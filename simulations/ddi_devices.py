"""Real SWUpdate devices for drills and tests: ``.swu`` releases built and signed, suricatta clients run.

``make_swu(...)`` builds a release as a device maker would: a ``sw-description`` (libconfig) naming one
image, installed by SWUpdate's ``rawfile`` handler onto a file-backed target (``ddi-target.img`` in the
device's directory), signed with CMS (Debian's swupdate is built with signed images: it refuses an
unsigned .swu) by a signing certificate made for the run, packed as a newc cpio (``common.swu``). With
``broken=True`` the image does not match the SHA-256 its signed ``sw-description`` names: SWUpdate
refuses it at install, and suricatta reports the action ``closed``/``failure``.

``SwupdateDevice`` runs Debian's ``swupdate`` with suricatta (``-u``) against a gateway's DDI URL from
its own directory (``TMPDIR`` too, so several run side by side), as a device with a ``swupdate.cfg``
would: it polls, downloads the .swu from the site cache, installs it, reports "installed", and runs its
post-update command. That command is the device's reboot: it marks the directory, the harness stops the
process, checks the target (the image's self-test, ``device_agent.simimage``) and starts swupdate again
with ``-c 2`` (success) or ``-c 3`` (failure), the confirmation a device's health check gives after a
reboot, which suricatta reports to the gateway as the action's result.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common.fileio import write_atomic
from common.swu import pack
from device_agent import simimage

__all__ = ["DDI_HW", "SWUPDATE", "SigningCert", "SwupdateDevice", "make_signing_cert", "make_swu", "swupdate_missing"]

SWUPDATE = "swupdate"
DDI_HW = "ddi-board"  # the DDI devices' hardware model in drills (releases list it beside the agents')
HW_REVISION = "1.0"  # what sw-description's hardware-compatibility names and swupdate -H gives


def swupdate_missing() -> str:
    """Why the real client cannot run here ("" if it can): the package to install."""
    if shutil.which(SWUPDATE) is None:
        return "the real DDI client needs Debian's swupdate package (apt-get install swupdate; make tools)"
    return ""


@dataclass(frozen=True, slots=True)
class SigningCert:
    cert: Path  # PEM: what devices verify sw-description.sig with (swupdate -k)
    key: Path


def make_signing_cert(root: Path) -> SigningCert:
    """A self-signed RSA certificate for signing .swu files (extended key usage emailProtection, what
    swupdate checks by default)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet swu signing")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .sign(key, hashes.SHA256()))
    out = SigningCert(root / "swu-signing.pem", root / "swu-signing.key")
    write_atomic(out.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    write_atomic(out.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()), 0o600)
    return out


def _sign(data: bytes, signer: SigningCert) -> bytes:
    """A detached CMS (PKCS#7) signature in DER, as ``openssl cms -sign -binary -nosmimecap -outform DER``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    cert = x509.load_pem_x509_certificate(signer.cert.read_bytes())
    key = serialization.load_pem_private_key(signer.key.read_bytes(), password=None)
    opts = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities]
    return (pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(cert, key, hashes.SHA256())  # type: ignore[arg-type]
            .sign(serialization.Encoding.DER, opts))


def make_swu(path: Path, version: str, signer: SigningCert, *, image: bytes | None = None, health: str = "ok",
             broken: bool = False) -> Path:
    """A signed .swu of release ``version`` whose image (a simulated one unless given) the rawfile handler
    writes to ``ddi-target.img``; ``broken``: the image differs from the hash sw-description names."""
    image = image if image is not None else simimage.make(version, health, 64 * 1024)
    named = hashlib.sha256(image).hexdigest()
    if broken:
        image = image[:-1] + bytes([image[-1] ^ 0xFF])
    desc = (
        "software =\n{\n"
        f'\tversion = "{version}";\n'
        '\tdescription = "EdgeFleet release";\n'
        f'\thardware-compatibility: [ "{HW_REVISION}" ];\n'
        "\timages: (\n\t\t{\n"
        '\t\t\tfilename = "rootfs.img";\n'
        '\t\t\ttype = "rawfile";\n'
        '\t\t\tpath = "ddi-target.img";\n'
        f'\t\t\tsha256 = "{named}";\n'
        "\t\t}\n\t);\n}\n"
    ).encode()
    blob = pack([("sw-description", desc), ("sw-description.sig", _sign(desc, signer)), ("rootfs.img", image)])
    write_atomic(path, blob, 0o644)
    return path


class SwupdateDevice:
    """One device running ``swupdate -u`` (suricatta, hawkBit server) in ``directory``."""

    def __init__(self, directory: Path, device_id: str, url: str, token: str, cert: Path, *, tenant: str = "default",
                 log: Path | None = None) -> None:
        self.dir, self.device_id, self.url, self.token, self.cert, self.tenant = directory, device_id, url, token, cert, tenant
        self.log = log or directory / "swupdate.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.confirmed: list[str] = []  # what each "reboot" found: "ok" or why not

    def config(self) -> Path:
        """The device's swupdate.cfg: what an integrator changes to point a device at its gateway (docs/DDI.md)."""
        cfg = self.dir / "swupdate.cfg"
        cfg.write_text(
            "globals :\n{\n\tloglevel = 5;\n"
            '\tpostupdatecmd = "touch rebooted";\n'  # the device's reboot (the harness plays the bootloader)
            "};\n"
            "suricatta :\n{\n"
            f'\ttenant = "{self.tenant}";\n\tid = "{self.device_id}";\n\turl = "{self.url}";\n'
            f'\ttargettoken = "{self.token}";\n\tpolldelay = 1;\n\tretry = 3;\n\tretrywait = 1;\n'
            "};\n"
            "identify : (\n"
            f'\t{{ name = "hwrevision"; value = "{HW_REVISION}"; }},\n'
            '\t{ name = "client"; value = "swupdate-suricatta"; }\n'
            ");\n")
        return cfg

    def start(self, confirm: str = "") -> None:
        """``confirm``: "2" (the new image is good) or "3" (it is not), after a reboot."""
        self.dir.mkdir(parents=True, exist_ok=True)
        suricatta = f"-c {confirm}" if confirm else ""
        cmd = [SWUPDATE, "-f", str(self.config()), "-k", str(self.cert), "-H", f"{DDI_HW}:{HW_REVISION}", "-v",
               "-u", suricatta or " "]
        env = {**os.environ, "TMPDIR": str(self.dir)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def step(self) -> bool:
        """Play the board: after an install's "reboot", stop swupdate, run the image's self-test, start it
        again confirming the result. True if it did so now."""
        marker = self.dir / "rebooted"
        if not marker.exists():
            return False
        self.stop()
        marker.unlink()
        target = self.dir / "ddi-target.img"
        info = simimage.info(target.read_bytes()) if target.exists() else None
        good = info is not None and info.get("health") == "ok"
        self.confirmed.append("ok" if good else f"self-test failed: {info}")
        self.start("2" if good else "3")
        return True

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @staticmethod
    def settle(devices: list[SwupdateDevice], until: float) -> None:
        """Step every device until ``until`` (monotonic seconds)."""
        while time.monotonic() < until:
            for d in devices:
                d.step()
            time.sleep(0.2)
