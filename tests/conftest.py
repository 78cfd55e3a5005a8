"""Fixtures: the same scenarios on the in-memory store, a SQLite file and PostgreSQL.

PostgreSQL tests use the server on 127.0.0.1:5432 (database `test`, overridable with
RUNHISTORY_TEST_POSTGRES), each test in a schema of its own; they skip with the reason
when no server answers there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

# The one backend matrix. SHARED: the stores that outlive a process, so that several
# processes, or a process after a restart, can share them.
BACKENDS = ("memory", "sqlite-file", "postgres")
SHARED = ("sqlite-file", "postgres")
POSTGRES = os.environ.get(
    "RUNHISTORY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_postgres_problem: str | None = None


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can. Asked once per session."""
    global _postgres_problem
    if _postgres_problem is None:
        try:
            engine = create_engine(POSTGRES, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _postgres_problem = ""
        except (OperationalError, ImportError) as error:
            _postgres_problem = f"no PostgreSQL at {POSTGRES}: {str(error).splitlines()[0]}"
    return _postgres_problem or None


def postgres_schema_url() -> Iterator[str]:
    """A fresh schema, as a URL whose connections use it; dropped afterwards."""
    problem = postgres_problem()
    if problem and os.environ.get("RUNHISTORY_REQUIRE_POSTGRES"):
        pytest.fail(problem)  # CI starts PostgreSQL: there, its absence is a failure
    if problem:
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The `db` setting of a fresh, empty store on the backend."""
    if backend == "memory":
        yield "memory"
    elif backend == "sqlite-file":
        yield str(tmp_path / "runhistory.db")
    else:
        yield from postgres_schema_url()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes `backend` runs on the one matrix, BACKENDS, or on the subset its
    `backends` marker names (on the test or, as `pytestmark`, on its module)."""
    if "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition._fixtureinfo.name2fixturedefs.get("backend"):
        return  # a fixture of its own (tests/e2e/sdk_server.py, which runs without conftest)
    marker = metafunc.definition.get_closest_marker("backends")
    chosen = marker.args if marker is not None else BACKENDS
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}: choose from {BACKENDS}")
    metafunc.parametrize("backend", chosen)


@pytest.fixture
def service(database: str) -> Iterator[RunService]:
    svc = RunService(Settings(db=database))
    yield svc
    svc.close()


def exact(value: Any) -> Any:
    """A value with its type, for comparisons where 1, 1.0 and True differ, NaN equals NaN
    and -0.0 differs from 0.0."""
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    return (type(value).__name__, repr(value))


@contextmanager
def service_on(backend: str, folder: Path, **settings: object) -> Iterator[RunService]:
    """A service on a fresh, empty store of the backend (files go in `folder`); closed, and
    its PostgreSQL schema dropped, afterwards."""
    schemas = postgres_schema_url() if backend == "postgres" else None
    if schemas is not None:
        db = next(schemas)
    else:
        db = "memory" if backend == "memory" else str(folder / "runhistory.db")
    try:
        with RunService(Settings(db=db, **settings)) as svc:
            yield svc
    finally:
        if schemas is not None:
            schemas.close()  # drops the schema


# ---- TLS: a certificate authority made by the test --------------------------------------


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, Any] | None,
    is_ca: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by the test."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("runhistory test CA", ca_key, None, is_ca=True)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    made = {"ca": ca_path}
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        made[name], made[f"{name}_key"] = _write(
            folder, name, _certificate(name, key, (ca.subject, ca_key)), key
        )
    return made
