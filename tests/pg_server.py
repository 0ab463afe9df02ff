"""A throw-away PostgreSQL server for the tests, the benchmark and developers (standard library only).

:func:`start_server` makes a cluster in a temporary folder with the server binaries of the machine (``initdb``
on PATH or under ``/usr/lib/postgresql/*/bin``), listening on 127.0.0.1 at a free port and on a socket in that
folder. ``initdb`` refuses to run as root, so as root the cluster belongs to an unprivileged system user
(``nobody``) and the server is started through ``runuser``. Local socket connections are trusted (the setup
runs ``psql`` through them); TCP connections need a password (SCRAM), so a wrong password is refused as a real
server would. The role ``carequal`` (with a random password) owns the database ``hospital``.

:func:`load_sample` loads the sample's CSV files (``data/sample``) into that database under the names of
``data/sample/warehouse.toml``: other table and column names, coded values, a discharge status stored as a
number, and a view joining two tables.

Run it to get a server for trying ``--source`` by hand (``python3 tasks.py pg`` does this)::

    python tests/pg_server.py --sample      # prints the environment to export, stops on Ctrl-C
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
USER = "carequal"
DATABASE = "hospital"
ADMIN = "pgadmin"
SERVICE_USER = "nobody"
"""The unprivileged system user a cluster belongs to when the tests run as root."""


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (binaries missing, initdb or start failed): the reason."""


def find_bin(name: str) -> Path | None:
    """A PostgreSQL server program: on PATH, else the newest ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name)
    if found:
        return Path(found)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: float(p.parent.name)
                      if p.parent.name.replace(".", "").isdigit() else 0, reverse=True)
    for folder in versions:
        if (folder / name).is_file():
            return folder / name
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running throw-away server (see the module docstring)."""

    folder: Path
    port: int
    password: str
    bin_dir: Path
    as_user: str | None

    @property
    def socket_dir(self) -> Path:
        return self.folder

    def url(self, *, password: str | None = None, database: str = DATABASE, user: str = USER,
            host: str = "127.0.0.1") -> str:
        """``postgresql://user:password@127.0.0.1:port/database`` (the real password unless another is given)."""
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@{host}:{self.port}/{database}"

    def environment(self) -> dict[str, str]:
        """The variables ``data/sample/warehouse.toml`` reads."""
        return {"CAREQUAL_DB_HOST": "127.0.0.1", "CAREQUAL_DB_PORT": str(self.port),
                "CAREQUAL_DB_PASSWORD": self.password}

    def psql(self, sql: str, *, user: str = USER, database: str = DATABASE, cwd: Path | None = None) -> str:
        """Run SQL (a script: ``\\copy`` and ``;``-separated statements) through the trusted local socket."""
        cmd = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
               "-p", str(self.port), "-U", user, "-d", database, "-At", "-f", "-"]
        done = subprocess.run(cmd, input=sql, capture_output=True, text=True, cwd=cwd)
        if done.returncode:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        _run(self.as_user, [str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w",
                            "stop"], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(as_user: str | None, cmd: list[str], *, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    if as_user is not None:
        cmd = ["runuser", "-u", as_user, "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and done.returncode:
        raise ServerUnavailable(f"{Path(cmd[0]).name if as_user is None else cmd[3]} failed "
                                f"({done.returncode}): {(done.stderr or done.stdout).strip()[-600:]}")
    return done


def start_server(*, settings: dict[str, str] | None = None, timeout: float = 60.0) -> PgServer:
    """Start a throw-away server (see the module docstring) and create the ``carequal`` role and database.

    Raises
    ------
    ServerUnavailable
        Naming why: no ``initdb`` on this machine (install Debian's ``postgresql``), running as root without
        ``runuser`` or the ``nobody`` user, or the cluster would not initialise or start (its log's tail).
    """
    initdb = find_bin("initdb")
    if initdb is None:
        raise ServerUnavailable("PostgreSQL server binaries (initdb) not found on PATH or in /usr/lib/postgresql; "
                                "install them (apt-get install postgresql)")
    bin_dir = initdb.resolve().parent  # the version's own folder (psql, pg_ctl beside initdb)
    as_user = None
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to an unprivileged user
        import pwd

        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise ServerUnavailable(f"running as root and there is no {SERVICE_USER!r} user to run the server "
                                    "as") from None
        if shutil.which("runuser") is None:
            raise ServerUnavailable("running as root and runuser is not installed (util-linux)")
        as_user = SERVICE_USER
    folder = Path(tempfile.mkdtemp(prefix="carequal-pg-"))
    password = secrets.token_urlsafe(18)
    try:
        if as_user is not None:
            shutil.chown(folder, user=as_user)
        pwfile = folder / "pw"
        pwfile.write_text(secrets.token_urlsafe(18) + "\n")
        if as_user is not None:
            shutil.chown(pwfile, user=as_user)
        _run(as_user, [str(initdb), "-D", str(folder / "data"), "-U", ADMIN, "--pwfile", str(pwfile),
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                       "--no-instructions"])
        pwfile.unlink()
        port = free_port()
        options = {"listen_addresses": "'127.0.0.1'", "port": str(port), "unix_socket_directories": f"'{folder}'",
                   "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                   "max_wal_size": "'4GB'", **(settings or {})}
        with open(folder / "data" / "postgresql.conf", "a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in options.items())
        done = _run(as_user, [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"),
                              "-w", "-t", str(int(timeout)), "start"], check=False)
        if done.returncode:
            log = (folder / "server.log").read_text(errors="replace") if (folder / "server.log").exists() else ""
            raise ServerUnavailable(f"the server would not start: {(log or done.stderr).strip()[-600:]}")
        server = PgServer(folder, port, password, bin_dir, as_user)
        server.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'; CREATE DATABASE {DATABASE} OWNER {USER};",
                    user=ADMIN, database="postgres")
        return server
    except BaseException:
        _run(as_user, [str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(folder, ignore_errors=True)
        raise


_RAW = {
    "facilities": "facility_id, name, setting, market, is_partner, partner_since, beds, nurse_hours_ppd",
    "patients": "patient_id, birth_date, sex, dual_eligible, death_date, market, population_group",
    "stays": "stay_id, patient_id, facility_id, admit_date, discharge_date, discharge_status, admission_type, "
             "principal_dx, principal_dx_poa, secondary_dx, secondary_poa, procedures, payment",
    "enrollment": "patient_id, start_date, end_date, coverage, sponsor",
    "ed_visits": "visit_id, patient_id, visit_date, facility_id",
}

WAREHOUSE_SQL = """
CREATE SCHEMA warehouse;
CREATE TABLE warehouse.providers AS SELECT
    facility_id AS "PRVDR_NUM", name AS "PRVDR_NAME",
    CASE setting WHEN 'acute' THEN 'STH' WHEN 'snf' THEN 'SNF' WHEN 'irf' THEN 'IRF' WHEN 'ltch' THEN 'LTC'
                 WHEN 'hha' THEN 'HHA' ELSE setting END AS "PRVDR_TYPE",
    market AS "MKT_NM", is_partner::boolean AS "PARTNER_FLG", partner_since::date AS "PARTNER_DT",
    beds::integer AS "BED_CNT", nurse_hours_ppd::double precision AS "NURSE_HRS_PPD"
  FROM staging.facilities;
CREATE TABLE warehouse.members AS SELECT
    patient_id AS mbr_id, birth_date::date AS birth_dt,
    CASE sex WHEN 'M' THEN '1' WHEN 'F' THEN '2' WHEN 'U' THEN '0' ELSE sex END AS gndr_cd,
    dual_eligible::boolean AS dual_flg, death_date::date AS death_dt, market AS mkt, population_group AS pop_grp
  FROM staging.patients;
CREATE TABLE warehouse.claims AS SELECT
    stay_id AS claim_id, patient_id AS mbr_id, facility_id AS prvdr_num, admit_date::date AS adm_dt,
    discharge_date::date AS dis_dt, discharge_status::smallint AS dschrg_stus, admission_type AS adm_type,
    payment::double precision AS pmt_amt, timestamp '2025-01-31 12:00:00' AS updated_at
  FROM staging.stays;
CREATE TABLE warehouse.claim_dx AS SELECT
    stay_id AS claim_id, principal_dx AS prin_dx, principal_dx_poa AS prin_poa, secondary_dx AS sec_dx,
    secondary_poa AS sec_poa, procedures AS prcdr
  FROM staging.stays;
CREATE VIEW warehouse.stays_v AS
  SELECT c.claim_id, c.mbr_id, c.prvdr_num, c.adm_dt, c.dis_dt, c.dschrg_stus, c.adm_type, d.prin_dx, d.prin_poa,
         d.sec_dx, d.sec_poa, d.prcdr, c.pmt_amt, c.updated_at
    FROM warehouse.claims c JOIN warehouse.claim_dx d ON d.claim_id = c.claim_id;
CREATE TABLE warehouse.eligibility AS SELECT
    patient_id AS mbr_id, start_date::date AS elig_start, end_date::date AS elig_end,
    CASE coverage WHEN 'ffs' THEN 'A' WHEN 'ma' THEN 'C' WHEN 'commercial' THEN 'G' ELSE coverage END AS cov_type,
    sponsor AS grp_name
  FROM staging.enrollment;
CREATE TABLE warehouse.er_visits AS SELECT
    visit_id AS er_id, patient_id AS mbr_id, visit_date::date AS visit_dt, facility_id AS prvdr_num
  FROM staging.ed_visits;
DROP SCHEMA staging CASCADE;
ANALYZE;
"""


def load_staging(server: PgServer, data: Path, tables: tuple[str, ...] = tuple(_RAW)) -> None:
    """The CSV files of ``data`` as text tables ``staging.<table>`` (``\\copy``: empty cells are NULL)."""
    script = ["CREATE SCHEMA IF NOT EXISTS staging;"]
    for table in tables:
        columns = ", ".join(f"{c.strip()} text" for c in _RAW[table].split(","))
        script.append(f"CREATE TABLE staging.{table} ({columns});")
        script.append(f"\\copy staging.{table} ({_RAW[table]}) FROM '{data / (table + '.csv')}' WITH (FORMAT csv, "
                      "HEADER true)")
    server.psql("\n".join(script))


def load_sample(server: PgServer, data: Path = SAMPLE) -> None:
    """The sample's tables in the warehouse layout of ``data/sample/warehouse.toml`` (see the module docstring)."""
    load_staging(server, data)
    server.psql(WAREHOUSE_SQL)


def main(argv: list[str]) -> None:
    import signal

    server = start_server()
    try:
        if "--sample" in argv:
            load_sample(server)
        safe = server.url(password="${CAREQUAL_DB_PASSWORD}")
        print(f"PostgreSQL {server.bin_dir.parent.name} on 127.0.0.1:{server.port}, data in {server.folder}")
        print(f"URL: {safe}  (role {USER}, database {DATABASE})")
        print("For data/sample/warehouse.toml:")
        for name, value in server.environment().items():
            print(f"  export {name}={value}")
        if "--sample" in argv:
            print("  carequal check --source data/sample/warehouse.toml")
        print("Ctrl-C stops the server and removes its data.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("server stopped")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
