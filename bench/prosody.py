"""Debian's Prosody 0.12, started on loopback as the bench's yardstick.

The issues' targets come from Prosody 0.12 and ejabberd 23.01 measured on
this machine, and this machine's speed moves from day to day (the same
commit has measured 1.6 and 2.7 ms of CPU a login a few days apart). So
`load.py --scenario logins --reference prosody` also runs the same loader,
the same pass, against a Prosody started here, in the same hour, and prints
both. Prosody is what an operator runs: Debian's package and the modules
of its shipped configuration, less the ones that would change the flow
(limits, which the bench lifts on this server too; smacks, s2s, posix).

Accounts are written straight into Prosody's file store, with SCRAM-SHA-256
credentials (`password_hash = "SHA-256"`, which 0.12 supports), so that the
loader does the same SASL exchange against both servers; the certificate is
an ECDSA P-256 one like this server's own (xmpp/tls.py).
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from load import stop_process, wait_listening  # noqa: E402  (bench/load.py)

from xmpp.tls import generate_self_signed  # noqa: E402

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
ITERATIONS = 4096  # this server's default (xmpp/passwords.py)

# Debian's prosody.cfg.lua modules_enabled, less limits, smacks, dialback,
# posix and the invite/admin ones that need a shell or HTTP.
MODULES = (
    "disco",
    "roster",
    "saslauth",
    "tls",
    "blocklist",
    "bookmarks",
    "carbons",
    "pep",
    "private",
    "vcard4",
    "vcard_legacy",
    "csi_simple",
    "ping",
    "register",
    "time",
    "uptime",
    "version",
)


def available() -> bool:
    return Path(PROSODY).exists()


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Prosody:
    """A Prosody on a free port of 127.0.0.1 with `accounts` (all with `password`)."""

    def __init__(self, domain: str, accounts: list[str], password: str, port: int) -> None:
        self.domain = domain
        self.accounts = accounts
        self.password = password
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="xmpp-bench-prosody-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        t0 = time.monotonic()
        data = self.dir / "data"
        self._write_accounts(data / self.domain.replace(".", "%2e") / "accounts")
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        generate_self_signed(self.domain, cert, key)
        config = self.dir / "prosody.cfg.lua"
        modules = "".join(f"  {_lua(name)};\n" for name in MODULES)
        config.write_text(
            f"data_path = {_lua(str(data))}\n"
            f"pidfile = {_lua(str(self.dir / 'prosody.pid'))}\n"
            f"log = {{ warn = {_lua(str(self.dir / 'prosody.log'))} }}\n"
            f"modules_enabled = {{\n{modules}}}\n"
            'modules_disabled = { "s2s" }\n'
            # The bench runs as root in CI; Prosody refuses to unless told.
            "run_as_root = true\n"
            f"certificates = {_lua(str(self.dir))}\n"
            f"c2s_ports = {{ {self.port} }}\n"
            'c2s_interfaces = { "127.0.0.1" }\n'
            "c2s_direct_tls_ports = { }\n"
            'authentication = "internal_hashed"\n'
            'password_hash = "SHA-256"\n'
            "c2s_require_encryption = true\n"
            "allow_registration = false\n"
            f"VirtualHost {_lua(self.domain)}\n"
            f"  ssl = {{ certificate = {_lua(str(cert))}; key = {_lua(str(key))} }}\n"
        )
        self.process = subprocess.Popen(
            [PROSODY, "--config", str(config), "-F"],
            cwd=self.dir,
            stdout=open(self.dir / "stdout.log", "wb"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.process, (self.port,), 30, self.log)
        print(
            f"  [prosody] {self.version()} pid {self.process.pid} on 127.0.0.1:{self.port}; "
            f"{len(self.accounts)} accounts written in {time.monotonic() - t0:.1f} s",
            flush=True,
        )

    def _write_accounts(self, directory: Path) -> None:
        # mod_auth_internal_hashed's record: the SCRAM keys in hex, the salt
        # as it is hashed (RFC 5802 §3). One salt for all: the loader derives
        # SaltedPassword once an account either way (load.py, ScramKeys).
        directory.mkdir(parents=True)
        salt = "bench-salt-0123456789"
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt.encode(), ITERATIONS)
        stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).hexdigest()
        server_key = hmac.digest(salted, b"Server Key", "sha256").hex()
        record = (
            f"return {{ iteration_count = {ITERATIONS}; salt = {_lua(salt)}; "
            f"stored_key = {_lua(stored_key)}; server_key = {_lua(server_key)}; }};\n"
        )
        for user in self.accounts:
            (directory / f"{user}.dat").write_text(record)

    def version(self) -> str:
        result = subprocess.run(["prosodyctl", "about"], capture_output=True, text=True, timeout=30)
        return (result.stdout.strip().splitlines() or ["Prosody"])[0]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        text = ""
        for name in ("stdout.log", "prosody.log"):
            path = self.dir / name
            if path.exists():
                text += path.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
