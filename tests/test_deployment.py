"""docker-compose.yml against the services' real settings and what `discovery secrets` makes
(no Docker engine runs here): each service is given only its own certificate and signing key,
and MongoDB requires TLS and authenticates the engine by its certificate."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from pymongo import MongoClient, uri_parser

from services.auth import ADMIN, ENGINE, TokenAuthority, Unauthenticated
from services.certs import (
    CA_CERT,
    CA_KEY,
    DEFAULT_HOSTS,
    MONGO_KEYFILE,
    MONGO_ROOT_PASSWORD,
    TOKENS,
    make_deployment_secrets,
)
from services.engine.config import Settings as EngineSettings
from services.envconfig import ConfigError
from services.gateway.config import Settings as GatewaySettings
from services.pioneer.config import Settings as PioneerSettings
from services.token_keys import OPERATOR, TRUSTED_KEYS_FILE

ROOT = Path(__file__).resolve().parents[1]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ALL_SERVICES: dict[str, Any] = COMPOSE["services"]
# The default deployment (`docker compose up`), the `cluster` profile's, and the `monitoring`
# profile's (Prometheus and Grafana, for either: tests/test_monitoring.py).
SERVICES = {name: s for name, s in ALL_SERVICES.items() if "profiles" not in s}
CLUSTER = {name: s for name, s in ALL_SERVICES.items() if s.get("profiles") == ["cluster"]}
MONITORING = {name: s for name, s in ALL_SERVICES.items() if s.get("profiles") == ["monitoring"]}
SETTINGS: dict[str, Any] = {
    "engine": EngineSettings,
    "pioneer": PioneerSettings,
    "gateway": GatewaySettings,
}
CONFIG_SOURCES = {name: ROOT / f"services/{name}/config.py" for name in SETTINGS}
# Read by every service, through services/token_keys.py and services/tls.py.
# Read by every service: token keys, and the TLS variables (the client library's settings).
SHARED_SOURCES = (ROOT / "services/token_keys.py", ROOT / "discovery_client/settings.py")
RUN_SECRETS = "/run/secrets/"
# Where mongo's entrypoint copies its secrets, owned by mongod's user (see docker-compose.yml).
MONGO_SECRETS = "/etc/mongo-secrets/"


def secret_file(name: str) -> str:
    """The file under secrets/ that the compose secret `name` mounts."""
    source: str = COMPOSE["secrets"][name]["file"]
    assert source.startswith("./secrets/"), name
    return source.removeprefix("./secrets/")


def mounts(service: str) -> dict[str, str]:
    """The compose secrets `service` mounts, by the name it finds each under /run/secrets."""
    found = {}
    for entry in ALL_SERVICES[service]["secrets"]:
        if isinstance(entry, str):
            found[entry] = entry
        else:
            found[entry.get("target", entry["source"])] = entry["source"]
    return found


def mounted(service: str) -> set[str]:
    return {secret_file(name) for name in mounts(service).values()}


def env(service: str, secrets: Path | None = None) -> dict[str, str]:
    """The service's environment; with `secrets`, every /run/secrets/NAME it names (the engine's
    MongoDB URI too) is the file `discovery secrets` made there, and must be one it mounts."""
    values = {k: str(v) for k, v in ALL_SERVICES[service]["environment"].items()}
    if secrets is None:
        return values

    def local(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in mounts(service), f"{service} does not mount {name}"
        return str(secrets / secret_file(mounts(service)[name]))

    return {k: re.sub(r"/run/secrets/(\w+)", local, v) for k, v in values.items()}


def settings(service: str, secrets: Path) -> Any:
    return SETTINGS[kind(service)].from_env(env(service, secrets))


def kind(service: str) -> str:
    """`engine` of `engine-2`."""
    return service.rsplit("-", 1)[0] if service[-1].isdigit() else service


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_variable_is_one_the_service_reads() -> None:
    for service, source in CONFIG_SOURCES.items():
        text = source.read_text() + "".join(shared.read_text() for shared in SHARED_SOURCES)
        for name in env(service):
            assert f'"{name}"' in text, f"{service} does not read {name}"
        assert SERVICES[service]["command"] == ["python", "-m", f"services.{service}"]


def test_each_service_is_given_its_own_certificate_and_signing_key_only() -> None:
    everyone = set(SERVICES)
    assert everyone == {"mongo", *SETTINGS}
    for service in SETTINGS:
        assert mounted(service) == {
            CA_CERT,
            f"{TOKENS}/{TRUSTED_KEYS_FILE}",
            f"{service}.crt",
            f"{service}.key",
            f"{TOKENS}/{service}.key",
        } | ({"engine.pem"} if service == "engine" else set()), service
    assert mounted("mongo") == {CA_CERT, "mongo.pem", MONGO_ROOT_PASSWORD, MONGO_KEYFILE}
    for service in everyone:
        for file in mounted(service):
            owner = Path(file).name.split(".")[0]
            assert owner not in everyone - {service}, f"{service} mounts {file}"
    # The CA's key only issues certificates and the operator's key signs admin tokens: both
    # stay with whoever runs the deployment, off its servers.
    files = {secret_file(name) for name in COMPOSE["secrets"]}
    assert CA_KEY not in files and f"{TOKENS}/{OPERATOR}.key" not in files


def test_discovery_secrets_makes_what_compose_mounts_and_keeps_it(tmp_path: Path) -> None:
    made = {str(p.relative_to(tmp_path)) for p in make_deployment_secrets(tmp_path)}
    for name in COMPOSE["secrets"]:
        assert secret_file(name) in made, name
    assert {CA_KEY, f"{TOKENS}/{OPERATOR}.key"} <= made
    # TLS keys and token keys live apart: tokens/engine.key is not engine.key.
    assert (tmp_path / "engine.key").read_bytes() != (tmp_path / TOKENS / "engine.key").read_bytes()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert make_deployment_secrets(tmp_path) == [], "a second run keeps everything"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_lost_certificate_is_issued_again_by_the_same_ca(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    ca = (tmp_path / CA_CERT).read_bytes()
    (tmp_path / "engine.crt").unlink()
    made = {p.name for p in make_deployment_secrets(tmp_path)}
    assert made == {"engine.crt", "engine.key", "engine.pem"}
    assert (tmp_path / CA_CERT).read_bytes() == ca
    certificate(tmp_path / "engine.crt").verify_directly_issued_by(certificate(tmp_path / CA_CERT))
    # Without the CA's key (kept off the servers) nothing can be issued: said, not guessed.
    (tmp_path / CA_KEY).unlink()
    (tmp_path / "gateway.crt").unlink()
    with pytest.raises(ConfigError, match=r"ca\.key is not there"):
        make_deployment_secrets(tmp_path)


def test_each_service_loads_its_own_keys_and_trusts_the_same_ones(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    loaded = {service: settings(service, tmp_path) for service in SETTINGS}
    trusted = [[(k.kid, dict(k.grants)) for k in s.auth_keys.trusted] for s in loaded.values()]
    assert trusted[0] and all(keys == trusted[0] for keys in trusted)
    signing = {s.auth_keys.signing.kid for s in loaded.values() if s.auth_keys.signing}
    assert len(signing) == len(SETTINGS), "every service signs with a key of its own"
    assert all(s.tls is not None for s in loaded.values())
    assert len({s.tls.ca for s in loaded.values()}) == 1
    assert len({s.tls.cert for s in loaded.values()}) == len(SETTINGS)


def test_a_service_key_signs_only_what_its_service_may(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    engine = TokenAuthority(settings("engine", tmp_path).auth_keys)
    gateway = TokenAuthority(settings("gateway", tmp_path).auth_keys)
    pioneer = TokenAuthority(settings("pioneer", tmp_path).auth_keys)
    token = engine.mint(subject="engine-1", role=ENGINE, tenant="acme", ttl_seconds=60)
    assert pioneer.verify(token).role == ENGINE
    # A gateway taken over cannot make itself an admin: its key is trusted for watcher and
    # runner tokens only.
    forged = gateway.mint(subject="intruder", role=ADMIN, tenant="acme", ttl_seconds=60)
    with pytest.raises(Unauthenticated) as refused:
        pioneer.verify(forged)
    assert refused.value.reason == "KEY_NOT_ALLOWED"


def test_each_certificate_names_its_service_and_chains_to_the_ca(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    ca = certificate(tmp_path / CA_CERT)
    for service in SERVICES:
        cert = certificate(tmp_path / f"{service}.crt")
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
        # Its compose name, which the others dial; localhost, which its health check dials.
        assert set(dns + ips) == {service, *DEFAULT_HOSTS}, service


def test_the_engine_and_mongodb_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    """Real TLS over a socket pair, with the files each side is given: mongod's one PEM, the
    engine's one PEM (what pymongo loads), the CA, and the name the engine dials."""
    make_deployment_secrets(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / CA_CERT)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_cert_chain(tmp_path / "mongo.pem")
    client = ssl.create_default_context(cafile=tmp_path / CA_CERT)
    client.load_cert_chain(tmp_path / "engine.pem")
    left, right = socket.socketpair()
    seen: list[Any] = []

    def serve() -> None:
        with server.wrap_socket(left, server_side=True) as tls:
            seen.append(tls.getpeercert())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname="mongo") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        right.close()  # the server's side ends too, whatever happened here
        thread.join()
    assert seen and dict(rdn[0] for rdn in seen[0]["subject"])["commonName"] == "engine"


def test_mongodb_requires_tls_and_authentication() -> None:
    mongo = SERVICES["mongo"]
    command = mongo["command"]
    flags = {
        arg: value if not value.startswith("--") else None
        for arg, value in zip(command, [*command[1:], "--"], strict=True)
        if arg.startswith("--")
    }
    assert command[0] == "mongod"
    assert flags["--tlsMode"] == "requireTLS"
    assert flags["--tlsCertificateKeyFile"] == f"{MONGO_SECRETS}mongo_pem"
    assert flags["--tlsCAFile"] == f"{MONGO_SECRETS}tls_ca"
    # A replica set with authentication: its members prove themselves with the key file, and
    # the entrypoint adds --auth when it is given the root user.
    assert flags["--keyFile"] == f"{MONGO_SECRETS}mongo_keyfile"
    assert flags["--replSet"] == "rs0"
    environment = mongo["environment"]
    assert environment["MONGO_INITDB_ROOT_USERNAME"] == "root"
    assert environment["MONGO_INITDB_ROOT_PASSWORD_FILE"] == f"{MONGO_SECRETS}mongo_root_password"
    # mongod refuses a key file others may read and reads its files as its own user: the
    # entrypoint copies every secret it is given to where the command looks for them.
    script = mongo["entrypoint"][2]
    assert "install -o mongodb -g mongodb -m 0400" in script
    assert 'exec docker-entrypoint.sh "$$@"' in script
    for name in mongo["secrets"]:
        assert f"{MONGO_SECRETS}{name}" in " ".join(command) + str(environment) + str(
            mongo["healthcheck"]
        ), name
    check = mongo["healthcheck"]["test"]
    assert check[:2] == ["CMD", "mongosh"]
    assert "--tls" in check and f"{MONGO_SECRETS}tls_ca" in check
    assert f"{MONGO_SECRETS}mongo_root_password" in check[-1] and "rs.initiate" in check[-1]


def test_mongodb_lets_the_engine_in_by_its_certificate_to_its_database(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    engine = settings("engine", tmp_path)
    init = COMPOSE["configs"]["mongo_engine_user"]["content"]
    (target,) = [c["target"] for c in SERVICES["mongo"]["configs"]]
    assert target.startswith("/docker-entrypoint-initdb.d/") and target.endswith(".js")
    # `$$` is compose's escape for a `$`.
    assert "db.getSiblingDB('$$external')" in init
    subject = certificate(tmp_path / "engine.crt").subject.rfc4514_string()
    assert f"user: '{subject}'" in init
    assert f"{{ role: 'readWrite', db: '{engine.mongodb_database}' }}" in init
    uri = engine.mongodb_uri
    assert uri is not None
    parsed = uri_parser.parse_uri(uri)
    options = parsed["options"]
    assert parsed["nodelist"] == [("mongo", 27017)] and options["replicaSet"] == "rs0"
    assert options["tls"] is True and options["authMechanism"] == "MONGODB-X509"
    assert parsed["password"] is None and "tlsInsecure" not in options
    assert options["tlsCAFile"] == str(tmp_path / CA_CERT)
    assert options["tlsCertificateKeyFile"] == str(tmp_path / "engine.pem")
    # pymongo reads the CA and the certificate when the client is made (no server needed).
    MongoClient(uri, connect=False).close()


def test_start_order_waits_for_health() -> None:
    assert "rs.initiate" in " ".join(SERVICES["mongo"]["healthcheck"]["test"])
    assert SERVICES["engine"]["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert SERVICES["gateway"]["depends_on"]["engine"]["condition"] == "service_healthy"
    # The engine starts without pioneer (a queued step waits for a runner); pioneer, which
    # polls the engine, comes after it.
    assert "pioneer" not in SERVICES["engine"]["depends_on"]
    assert "engine" in SERVICES["pioneer"]["depends_on"]
    for service in SETTINGS:
        assert SERVICES[service]["build"] == "."
        assert "healthcheck" in SERVICES[service]


def test_the_services_find_each_other(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    engine, pioneer, gateway = (settings(s, tmp_path) for s in ("engine", "pioneer", "gateway"))
    assert engine.host == pioneer.host == gateway.host == "0.0.0.0"
    # Pioneer pulls its work from the engine's step queue: it dials the engine, never the
    # other way round.
    assert pioneer.discovery_url == f"engine:{engine.port}"
    assert not [name for name in env("engine") if name.startswith("PIONEER")]
    assert gateway.engine_target == f"engine:{engine.port}"
    assert f"{gateway.port}:{gateway.port}" in SERVICES["gateway"]["ports"]
    assert f"{engine.port}:{engine.port}" in SERVICES["engine"]["ports"]
    # Health checks dial localhost, a name every certificate holds.
    assert SERVICES["engine"]["healthcheck"]["test"][-1] == f"localhost:{engine.port}"
    assert SERVICES["pioneer"]["healthcheck"]["test"][-1] == f"localhost:{pioneer.port}"


def test_compose_still_refuses_a_request_without_credentials(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    assert not [name for name in env("gateway") if name.startswith("GATEWAY_ANONYMOUS")]
    assert "GATEWAY_TRUSTED_NETWORK" not in env("gateway")
    gateway = settings("gateway", tmp_path)
    assert gateway.anonymous_access is False
    assert gateway.cors_origins == ()


# --- the cluster profile ------------------------------------------------------------------

CLUSTER_ENGINES = ["engine-1", "engine-2", "engine-3"]
CLUSTER_MONGOS = ["mongo-1", "mongo-2", "mongo-3"]
CLUSTER_CLIENTS = ["pioneer-1", "pioneer-2", "gateway-1", "gateway-2"]


# Set for the engine's cluster work (issue 12), which reads it: on its own branch until merged.
def test_the_cluster_profile_is_three_engines_two_pioneers_two_gateways_and_a_replica_set() -> None:
    assert set(CLUSTER) == {
        *CLUSTER_ENGINES,
        *CLUSTER_CLIENTS,
        *CLUSTER_MONGOS,
        "mongo-init",
        "entry",
    }
    assert set(SERVICES) | set(CLUSTER) | set(MONITORING) == set(ALL_SERVICES), (
        "a service in another profile"
    )
    for service in CLUSTER:
        if kind(service) in SETTINGS:
            assert ALL_SERVICES[service]["command"] == ["python", "-m", f"services.{kind(service)}"]
            assert ALL_SERVICES[service]["build"] == "."
            assert "healthcheck" in ALL_SERVICES[service]
            assert "ports" not in ALL_SERVICES[service], "only the entry point is published"
            text = CONFIG_SOURCES[kind(service)].read_text()
            text += "".join(shared.read_text() for shared in SHARED_SOURCES)
            for name in env(service):
                assert f'"{name}"' in text, f"{service} does not read {name}"
    # `up entry` starts all of it, and only it: the default services stay down.
    assert set(CLUSTER["entry"]["depends_on"]) == {*CLUSTER_ENGINES, *CLUSTER_CLIENTS}


def test_each_cluster_service_has_its_own_certificate_naming_it(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    ca = certificate(tmp_path / CA_CERT)
    for service in [*CLUSTER_ENGINES, *CLUSTER_CLIENTS]:
        token_key = f"{TOKENS}/{kind(service)}.key"
        assert mounted(service) == {
            CA_CERT,
            f"{TOKENS}/{TRUSTED_KEYS_FILE}",
            f"{service}.crt",
            f"{service}.key",
            token_key,
        } | ({f"{service}.pem"} if service in CLUSTER_ENGINES else set()), service
        loaded = settings(service, tmp_path)
        assert loaded.tls.cert == (tmp_path / f"{service}.crt").read_bytes()
        cert = certificate(tmp_path / f"{service}.crt")
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = {*names.get_values_for_type(x509.DNSName)}
        found |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        # An engine is dialled by its own name (forwarding) and by `engines` (its clients).
        alias = {"engines"} if service in CLUSTER_ENGINES else set()
        assert found == {service, *alias, *DEFAULT_HOSTS}, service
    for member in CLUSTER_MONGOS:
        assert mounted(member) >= {CA_CERT, f"{member}.pem", MONGO_KEYFILE}
        assert mounts(member)["mongo_pem"] == f"{member.replace('-', '_')}_pem"
    assert MONGO_ROOT_PASSWORD in [secret_file(n) for n in mounts("mongo-1").values()]
    assert {f"{s}.crt" for s in CLUSTER_MONGOS} <= {
        str(p.relative_to(tmp_path)) for p in tmp_path.iterdir()
    }


def test_each_cluster_engine_has_its_id_its_address_and_its_database_login(
    tmp_path: Path,
) -> None:
    make_deployment_secrets(tmp_path)
    ids = set()
    for service in CLUSTER_ENGINES:
        engine = settings(service, tmp_path)
        ids.add(engine.engine_id)
        assert engine.engine_id == service
        assert env(service)["ENGINE_ADVERTISE_ADDRESS"] == f"{service}:{engine.port}"
        assert ALL_SERVICES[service]["networks"]["default"]["aliases"] == ["engines"]
        assert ALL_SERVICES[service]["depends_on"] == {
            "mongo-init": {"condition": "service_completed_successfully"}
        }
        uri = engine.mongodb_uri
        parsed = uri_parser.parse_uri(uri)
        options = parsed["options"]
        assert parsed["nodelist"] == [(m, 27017) for m in CLUSTER_MONGOS]
        assert options["replicaSet"] == "rs0" and options["tls"] is True
        assert options["authMechanism"] == "MONGODB-X509" and parsed["password"] is None
        assert options["tlsCertificateKeyFile"] == str(tmp_path / f"{service}.pem")
        MongoClient(uri, connect=False).close()
        # Its login, made by mongo-1's first start: its certificate's subject.
        subject = certificate(tmp_path / f"{service}.crt").subject.rfc4514_string()
        users = COMPOSE["configs"]["mongo_cluster_engine_users"]["content"]
        name = service
        assert subject == f"CN={name},OU={name},O=Discovery"
        assert f"'{name}'" in users and "user: `CN=$${name},OU=$${name},O=Discovery`" in users
        assert "{ role: 'readWrite', db: 'discovery' }" in users
    assert len(ids) == 3


def test_pioneers_and_gateways_dial_every_engine(tmp_path: Path) -> None:
    make_deployment_secrets(tmp_path)
    for service in CLUSTER_CLIENTS:
        loaded = settings(service, tmp_path)
        target = loaded.discovery_url if kind(service) == "pioneer" else loaded.engine_target
        assert target == "dns:///engines:50051", service
        assert set(ALL_SERVICES[service]["depends_on"]) == set(CLUSTER_ENGINES)


def test_the_cluster_replica_set_has_three_members_with_tls_and_authentication() -> None:
    for member in CLUSTER_MONGOS:
        command = ALL_SERVICES[member]["command"]
        assert command == SERVICES["mongo"]["command"], member  # requireTLS, keyFile, rs0
        assert f"{member}-data:/data/db" in ALL_SERVICES[member]["volumes"]
        assert ALL_SERVICES[member]["entrypoint"] == SERVICES["mongo"]["entrypoint"]
    # Only mongo-1 makes users: the others start empty and copy its data.
    assert ALL_SERVICES["mongo-1"]["environment"] == SERVICES["mongo"]["environment"]
    assert "environment" not in ALL_SERVICES["mongo-2"]
    assert "configs" not in ALL_SERVICES["mongo-2"]
    init = ALL_SERVICES["mongo-init"]
    assert init["restart"] == "no"
    assert set(init["depends_on"]) == set(CLUSTER_MONGOS)
    script = init["command"][-1]
    assert "/run/secrets/mongo_root_password" in script and "rs.initiate" in script
    for i, member in enumerate(CLUSTER_MONGOS):
        assert f"{{_id: {i}, host: '{member}:27017'}}" in script
    assert "PRIMARY" in script
    assert "--tls" in init["command"] and "mongo_1_pem" in mounts("mongo-init")


def entry_config() -> str:
    config: str = COMPOSE["configs"]["entry_haproxy"]["content"]
    return config


def test_one_entry_point_for_http_websocket_and_grpc() -> None:
    entry = CLUSTER["entry"]
    assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+", entry["image"]), "a pinned version"
    assert entry["configs"] == [
        {"source": "entry_haproxy", "target": "/usr/local/etc/haproxy/haproxy.cfg"}
    ]
    assert sorted(entry["ports"]) == ["50051:50051", "8080:8080"]
    sections = re.split(r"\n(?=\S)", entry_config())
    gateways = next(s for s in sections if s.startswith("backend gateways"))
    engines = next(s for s in sections if s.startswith("backend engines"))
    assert "mode http" in gateways and "option httpchk GET /health" in gateways
    assert "mode tcp" in engines  # gRPC's mutual TLS passes through to the engine
    for service in ("gateway-1", "gateway-2"):
        assert f"server {service} {service}:8080 check" in gateways
    for service in CLUSTER_ENGINES:
        assert f"server {service} {service}:50051 check" in engines
    assert "timeout tunnel" in entry_config()  # WebSockets outlive a request's timeout


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_entry_point_configuration(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(entry_config())
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """Real TLS over a socket pair, the client dialling `name`: the client's common name as
    the server read it."""
    left, right = socket.socketpair()
    seen: list[Any] = []

    def serve() -> None:
        with server.wrap_socket(left, server_side=True) as tls:
            seen.append(tls.getpeercert())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=name) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        right.close()  # the server's side ends too, whatever happened here
        thread.join()
    common_name: str = dict(rdn[0] for rdn in seen[0]["subject"])["commonName"]
    return common_name


def test_a_cluster_engine_and_its_peers_complete_mutual_tls_handshakes(tmp_path: Path) -> None:
    """engine-1 dialling engine-2 (a forwarded call), a gateway dialling `engines`, engine-3
    dialling mongo-2, and mongo-1 dialling mongo-3 (replication), with the files each has."""
    make_deployment_secrets(tmp_path)

    def load(context: ssl.SSLContext, service: str) -> ssl.SSLContext:
        if (tmp_path / f"{service}.pem").exists():
            context.load_cert_chain(tmp_path / f"{service}.pem")
        else:
            context.load_cert_chain(tmp_path / f"{service}.crt", tmp_path / f"{service}.key")
        return context

    pairs = [
        ("engine-1", "engine-2", "engine-2"),
        ("gateway-1", "engine-3", "engines"),
        ("engine-3", "mongo-2", "mongo-2"),
        ("mongo-1", "mongo-3", "mongo-3"),
    ]
    for client, server, name in pairs:
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / CA_CERT)
        server_side.verify_mode = ssl.CERT_REQUIRED
        client_side = ssl.create_default_context(cafile=tmp_path / CA_CERT)
        seen = handshake(load(server_side, server), load(client_side, client), name)
        assert seen == client, (client, server)
