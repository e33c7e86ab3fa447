"""The Helm chart's pods, run for real with ``podman kube play`` (scripts/ci-chart runs this; not a pytest module).

What is rendered is what runs: ``helm template`` with a production configuration, then the rendered ConfigMap,
Secret, migration Job and the two Deployments, unchanged, in podman pods on a podman network of this run's own,
against a real PostgreSQL and a real livekit-server started here. Then, for each container, what Kubernetes
would have given it: the user it runs as (the process's own UID, read on the host), its read-only root
filesystem and writable /tmp, its capabilities, no-new-privileges and seccomp, its environment from the
ConfigMap and the Secret; its probes are requested from the host as the kubelet does. The token service mints
a token for an app user (a JWT, production's GOCARE_AUTH_MODE=jwt) that livekit's TokenVerifier accepts; the
worker registers with the livekit-server and stays healthy.

What podman 4.3 cannot do, and what is done instead:
- ``kind: Job`` is not a kind kube play knows: the Job's pod template (its init containers and container,
  exactly as rendered) is played as a Pod, and must exit 0.
- ``kind: Secret`` is not either: each rendered Secret's ``data`` becomes a podman secret of the same name,
  which is what kube play resolves ``envFrom.secretRef`` against.
- Probes become podman healthchecks that run curl inside the container on a systemd timer (neither is here):
  this script makes each probe's request itself, from the host, as the kubelet would.
- ``terminationGracePeriodSeconds`` does not reach the container (podman's stop timeout stays 10 s): the
  worker is stopped as the kubelet would, SIGTERM and SIGKILL only after the rendered grace period.
- HorizontalPodAutoscaler, PodDisruptionBudget, Service: checked as rendered YAML only (scripts/ci-chart).

Everything started here is stopped and removed at the end, and nothing else is touched.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RELEASE = "ci"
APP_USER = "ci-user"
APP_ROOM = "ci-user~ci-call"  # jwt mode: a user's rooms are <user id>~<label> (token_service/rooms.py)
APP_AUDIENCE = "gocare-ci"
AGENT = "multi-assistant"


class Failed(Exception):
    """A check that did not hold: one line for the CI log."""


def say(line: str) -> None:
    print(f"kube-play: {line}", flush=True)


def run(*cmd: str, check: bool = True, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise Failed(f"{' '.join(cmd[:4])} ... exited {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")
    return done


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run("nice", "-n", "10", "podman", *args, check=check, timeout=timeout)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode(errors="replace")
    except OSError as error:
        return 0, str(error)


@dataclass
class Cleanup:
    """What this run created, removed in reverse order whatever happens."""

    steps: list[tuple[str, list[str]]] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def podman(self, what: str, *args: str) -> None:
        self.steps.append((what, ["podman", *args]))

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for what, cmd in reversed(self.steps):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            if done.returncode != 0:
                say(f"cleanup of {what} failed: {(done.stderr or done.stdout).strip()[-300:]}")


# --- the things the pods talk to -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    name: str
    subnet: str
    gateway: str


def make_network(run_id: str, cleanup: Cleanup) -> Network:
    """A bridge of this run's own. Its gateway is the host's address on it, where PostgreSQL and livekit-server
    listen; the bridge exists once a container is on it, so an empty pod is started first."""
    name = f"gocare-chart-{run_id}"
    podman("network", "create", name)
    cleanup.podman(f"network {name}", "network", "rm", "-f", name)
    info = json.loads(podman("network", "inspect", name).stdout)[0]
    subnet = info["subnets"][0]
    anchor = f"gocare-chart-{run_id}-anchor"
    podman("pod", "create", "--name", anchor, "--network", name)
    cleanup.podman(f"pod {anchor}", "pod", "rm", "-f", anchor)
    podman("pod", "start", anchor)
    return Network(name=name, subnet=subnet["subnet"], gateway=subnet["gateway"])


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise Failed("PostgreSQL server binaries (initdb, pg_ctl) are not installed (Debian: postgresql)")
    return candidates[-1].parent


@contextlib.contextmanager
def postgres(net: Network, password: str) -> Iterator[str]:
    """A throwaway PostgreSQL on the network's gateway, with a password (scram) for the pods' subnet; yields
    the URL the pods use."""
    bin_dir = _pg_bin()
    workdir = Path(tempfile.mkdtemp(prefix="gocare-chart-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres", "postgres")
    data = workdir / "data"
    pwfile = workdir / "pw"
    pwfile.write_text(password + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    run(*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "gocare", "--pwfile", str(pwfile),
        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8")
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {net.subnet} scram-sha-256\n")
    run(*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(workdir / "log"), "-w", "-t", "60", "-o",
        f"-h 127.0.0.1,{net.gateway} -p {port} -k {workdir} -F", "start")
    try:
        yield f"postgresql+psycopg://gocare:{password}@{net.gateway}:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class LiveKit:
    url: str
    key: str
    secret: str
    log: Path


def start_livekit(binary: str, net: Network, workdir: Path, cleanup: Cleanup) -> LiveKit:
    """livekit-server (the cached build) on the gateway only, with a production-strength key: the chart's
    production configuration refuses the development key."""
    key, secret = "APIci" + secrets.token_hex(4), secrets.token_urlsafe(32)
    port, tcp, udp = free_port(), free_port(), free_port()
    config = workdir / "livekit.yaml"
    config.write_text(yaml.safe_dump({
        "port": port, "bind_addresses": [net.gateway],
        "rtc": {"tcp_port": tcp, "udp_port": udp, "node_ip": net.gateway, "use_external_ip": False},
        "keys": {key: secret}, "logging": {"level": "info"},
    }))
    log = workdir / "livekit.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    cleanup.processes.append(process)
    url = f"http://{net.gateway}:{port}/"
    deadline = time.monotonic() + 30
    while http_get(url)[0] != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            raise Failed(f"livekit-server did not answer on {url}: {log.read_text()[-600:]}")
        time.sleep(0.2)
    return LiveKit(url=f"ws://{net.gateway}:{port}", key=key, secret=secret, log=log)


# --- the chart -----------------------------------------------------------------------------------------------

def render(helm: str, chart: Path, values: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    values_file = workdir / "values.json"
    values_file.write_text(json.dumps(values))
    out = run(helm, "template", RELEASE, str(chart), "-f", str(chart / "ci" / "production-values.yaml"),
              "-f", str(values_file)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    if len(found) != 1:
        raise Failed(f"the chart rendered {len(found)} {kind} named *{suffix}, not one")
    return found[0]


def play(docs: list[dict[str, Any]], name: str, net: Network, workdir: Path, cleanup: Cleanup) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    cleanup.podman(f"kube play {name}", "kube", "down", str(path))
    podman("kube", "play", "--network", net.name, str(path), timeout=600)
    return path


def podman_secret(doc: dict[str, Any], cleanup: Cleanup, workdir: Path) -> None:
    """kube play resolves envFrom.secretRef against a podman secret holding the JSON of the Secret's data."""
    name = doc["metadata"]["name"]
    path = workdir / f"secret-{name}.json"
    path.write_text(json.dumps(doc["data"]))
    path.chmod(0o600)
    podman("secret", "create", name, str(path))
    cleanup.podman(f"secret {name}", "secret", "rm", name)
    path.unlink()


# --- what is checked in a running container ------------------------------------------------------------------

def containers_of(pod: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(podman("ps", "-a", "--filter", f"pod={pod}", "--format", "json").stdout)
    return {c["Names"][0]: c for c in listed if not c.get("IsInfra")}


def container_named(pod: str, name: str) -> str:
    for full in containers_of(pod):
        if full.endswith(f"-{name}"):
            return full
    raise Failed(f"no container {name} in pod {pod}: {sorted(containers_of(pod))}")


def inspect(container: str) -> dict[str, Any]:
    return dict(json.loads(podman("inspect", container).stdout)[0])


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def check_security(container: str, spec: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    """The container's main process as the kernel sees it, against the rendered securityContext."""
    state = inspect(container)["State"]
    if not state.get("Running"):
        raise Failed(f"{container} is not running: {state.get('Status')}")
    status = proc_status(int(state["Pid"]))
    uid = pod_spec["securityContext"]["runAsUser"]
    uids = status["Uid"].split()
    if uids[0] == "0" or uids[0] != str(uid):
        raise Failed(f"{container} runs as UID {uids[0]}, not the chart's runAsUser {uid}")
    if status["Gid"].split()[0] != str(pod_spec["securityContext"]["runAsGroup"]):
        raise Failed(f"{container} runs as GID {status['Gid']}")
    if int(status["CapEff"], 16) != 0 or int(status["CapPrm"], 16) != 0:
        raise Failed(f"{container} has capabilities {status['CapEff']} (the chart drops ALL)")
    if status.get("NoNewPrivs") != "1":
        raise Failed(f"{container}: allowPrivilegeEscalation false should set no_new_privs")
    if status.get("Seccomp") != "2":
        raise Failed(f"{container}: seccomp mode {status.get('Seccomp')}, not a filter (RuntimeDefault)")
    root = podman("exec", container, "touch", "/gocare-ci-write-test", check=False)
    if root.returncode == 0 or "Read-only file system" not in root.stderr:
        raise Failed(f"{container}: writing to / did not fail as read-only: {root.stderr.strip()}")
    tmp = podman("exec", container, "touch", "/tmp/gocare-ci-write-test", check=False)
    if tmp.returncode != 0:
        raise Failed(f"{container}: /tmp (the emptyDir) is not writable: {tmp.stderr.strip()}")
    if not spec["securityContext"]["readOnlyRootFilesystem"]:
        raise Failed("the rendered securityContext is not readOnlyRootFilesystem")
    say(f"{container}: UID {uids[0]} GID {status['Gid'].split()[0]}, CapEff {status['CapEff']}, NoNewPrivs 1, "
        "seccomp filter, / read-only, /tmp writable")


def environment(container: str) -> dict[str, str]:
    pid = inspect(container)["State"]["Pid"]
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def check_environment(container: str, config: dict[str, Any], secret: dict[str, Any]) -> None:
    """Every key of the ConfigMap and the Secret reached the process (values compared, never printed)."""
    env = environment(container)
    for key, value in config["data"].items():
        if env.get(key) != value:
            raise Failed(f"{container}: {key} from the ConfigMap is {'missing' if key not in env else 'different'}")
    for key, value in secret["data"].items():
        if env.get(key) != base64.b64decode(value).decode():
            raise Failed(f"{container}: {key} from the Secret is {'missing' if key not in env else 'different'}")
    say(f"{container}: {len(config['data'])} settings from the ConfigMap and {len(secret['data'])} keys from the "
        "Secret in its environment")


def pod_ip(pod: str, net: Network) -> str:
    inspected = json.loads(podman("pod", "inspect", pod).stdout)
    infra = (inspected[0] if isinstance(inspected, list) else inspected)["InfraContainerID"]
    networks = inspect(infra)["NetworkSettings"]["Networks"]
    return str(networks[net.name]["IPAddress"])


def probe_until_ready(ip: str, container_spec: dict[str, Any], container: str) -> None:
    """The startup probe as the kubelet runs it (period x failureThreshold), then liveness and readiness once."""
    startup = container_spec["startupProbe"]
    url = f"http://{ip}:{startup['httpGet']['port']}{startup['httpGet']['path']}"
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    deadline = time.monotonic() + budget
    while True:
        status, _ = http_get(url, timeout=startup.get("timeoutSeconds", 1))
        if status == 200:
            break
        state = inspect(container)["State"]
        if not state.get("Running") or time.monotonic() > deadline:
            logs = podman("logs", "--tail", "30", container, check=False)
            raise Failed(f"{container}: startup probe {url} not 200 within {budget} s ({status}); container "
                         f"{state.get('Status')}, log:\n{(logs.stdout + logs.stderr)[-2000:]}")
        time.sleep(startup["periodSeconds"])
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container_spec[kind]
        probe_url = f"http://{ip}:{probe['httpGet']['port']}{probe['httpGet']['path']}"
        status, _ = http_get(probe_url, timeout=probe.get("timeoutSeconds", 1))
        if status != 200:
            raise Failed(f"{container}: {kind} {probe_url} answered {status}")
    say(f"{container}: startup, liveness and readiness probes answered 200 ({url})")


def wait_for_log(container: str, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = podman("logs", container, check=False)
        text = logs.stdout + logs.stderr
        for line in text.splitlines():
            if needle in line:
                return line
        if time.monotonic() > deadline or not inspect(container)["State"].get("Running"):
            raise Failed(f"{container}: no {needle!r} in its log within {timeout:.0f} s; last lines:\n{text[-2000:]}")
        time.sleep(1)


# --- the run -------------------------------------------------------------------------------------------------

def the_values(image: str, lk: LiveKit, database_url: str, jwt_secret: str) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "config": {
            "LIVEKIT_URL": lk.url, "GOCARE_AUTH_AUDIENCE": APP_AUDIENCE,
            # one warm job process: this 2-core CI machine runs other things too
            "GOCARE_WORKER_IDLE_PROCESSES": "1",
        },
        "secret": {"existingSecret": "", "values": {
            "LIVEKIT_API_KEY": lk.key, "LIVEKIT_API_SECRET": lk.secret, "GOCARE_DATABASE_URL": database_url,
            "GOCARE_AUTH_JWT_SECRET": jwt_secret,
            # no call is made here: the worker only needs them present to start
            "LLM_API_KEY": "ci-not-a-real-key", "DEEPGRAM_API_KEY": "ci-not-a-real-key",
            "GOCARE_TTS_API_KEY": "ci-not-a-real-key",
        }},
        "worker": {"healthPort": free_port(), "metricsPort": free_port(), "drainTimeout": 60,
                   "terminationGracePeriodSeconds": 90},
        "tokenService": {"port": free_port(), "metricsPort": free_port()},
        "metrics": {"enabled": True},
    }


def tables(database_url: str) -> dict[str, list[str]]:
    """The database as the host sees it: table names, and the call records' Alembic revision."""
    import psycopg

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=10) as db:
        names = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        revision = [r[0] for r in db.execute("SELECT version_num FROM gocare_calls_alembic_version")] if (
            "gocare_calls_alembic_version" in names) else []
    return {"tables": sorted(names), "revision": revision}


def run_migration(docs: list[dict[str, Any]], net: Network, workdir: Path, cleanup: Cleanup,
                  database_url: str, never_logged: list[str]) -> None:
    """The hook Job's pod, as rendered: its init containers in order, then its container, which must exit 0;
    then the database must hold what both steps make. podman removes an init container once it has run
    (its "once" type), so the init step is judged by the main container having started at all and by its
    effect in the database."""
    from gocare_voice.records import migrate

    job = find(docs, "Job", "-migrate")
    hooks = [d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook")]
    if sorted(d["kind"] for d in hooks) != ["ConfigMap", "Job", "Secret"]:
        raise Failed(f"the migration hooks are {sorted(d['kind'] for d in hooks)}")
    before = tables(database_url)
    if before["tables"]:
        raise Failed(f"the run's database is not empty before the migration: {before}")
    config = find(docs, "ConfigMap", "-migrate")
    podman_secret(find(docs, "Secret", "-migrate"), cleanup, workdir)
    pod_name = f"{job['metadata']['name']}-ci"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name}, "spec": job["spec"]["template"]["spec"]}
    play([config, pod], "migration", net, workdir, cleanup)
    steps = [" ".join(c["args"]) for c in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]]
    main = f"{pod_name}-{pod['spec']['containers'][0]['name']}"
    deadline = time.monotonic() + job["spec"]["activeDeadlineSeconds"]
    while inspect(main)["State"].get("Status") not in ("exited", "stopped"):
        if time.monotonic() > deadline:
            raise Failed(f"the migration's last step is still running after activeDeadlineSeconds ({main})")
        time.sleep(1)
    state = inspect(main)["State"]
    logs = podman("logs", main, check=False)
    text = (logs.stdout + logs.stderr).strip()
    if state["ExitCode"] != 0:
        raise Failed(f"the migration's last step exited {state['ExitCode']}: {text[-800:]}")
    check_no_secrets("the migration", text, never_logged)
    after = tables(database_url)
    wanted = {"gocare_calls", "gocare_calls_alembic_version", "gocare_registered_users"}
    if not wanted <= set(after["tables"]) or after["revision"] != [migrate.head()]:
        raise Failed(f"after the migration the database holds {after}, not {sorted(wanted)} at {migrate.head()}")
    say(f"migration Job's pod ({' -> '.join(f'gocare {s}' for s in steps)}): exit 0, last line {text.splitlines()[-1]!r}; "
        f"database now has {', '.join(after['tables'])}, call records at revision {after['revision'][0]}")


def check_no_secrets(what: str, text: str, never_logged: list[str]) -> None:
    """Keys, the database password and tokens never reach a log."""
    leaked = [i for i, value in enumerate(never_logged) if value in text]
    if leaked:
        raise Failed(f"{what}: its log holds secret number {leaked} of this run (the values are not printed)")


def ready_pod(docs: list[dict[str, Any]], net: Network, component: str) -> tuple[dict[str, Any], str, str]:
    """The rendered Deployment ``-<component>``'s pod as kube play ran it, once its probes pass: the pod spec,
    the container (named ``component``) and the pod's address."""
    deployment = find(docs, "Deployment", f"-{component}")
    pod = f"{deployment['metadata']['name']}-pod-0"
    spec = deployment["spec"]["template"]["spec"]
    container = container_named(pod, component)
    ip = pod_ip(pod, net)
    probe_until_ready(ip, spec["containers"][0], container)
    return spec, container, ip


def check_token_service(docs: list[dict[str, Any]], net: Network, lk: LiveKit, jwt_secret: str,
                        config: dict[str, Any], secret: dict[str, Any]) -> None:
    import jwt
    from livekit import api

    spec, container, ip = ready_pod(docs, net, "token-service")
    check_security(container, spec["containers"][0], spec)
    check_environment(container, config, secret)
    port = spec["containers"][0]["startupProbe"]["httpGet"]["port"]
    status, body = http_get(f"http://{ip}:{port}/health")
    health = json.loads(body)
    if status != 200 or health.get("status") != "ok":
        raise Failed(f"GET /health answered {status} {body[:200]}")
    app_token = jwt.encode({"sub": APP_USER, "name": "CI User", "aud": APP_AUDIENCE, "exp": int(time.time()) + 300},
                           jwt_secret, algorithm="HS256")
    request = urllib.request.Request(
        f"http://{ip}:{port}/getToken", method="POST",
        data=json.dumps({"room": APP_ROOM, "name": "CI User"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {app_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        minted = json.loads(response.read())
    claims = api.TokenVerifier(lk.key, lk.secret).verify(minted["token"])
    if claims.identity != APP_USER or claims.video is None or claims.video.room != APP_ROOM:
        raise Failed(f"the minted token's claims are not the app user's: {claims.identity} {claims.video}")
    agents = claims.room_config.agents if claims.room_config else []
    if [a.agent_name for a in agents] != [AGENT]:
        raise Failed(f"the minted token dispatches {agents}, not {AGENT}")
    if minted.get("serverUrl") != lk.url:
        raise Failed(f"the token response names {minted.get('serverUrl')}, not LIVEKIT_URL {lk.url}")
    metrics_port = next(p["containerPort"] for p in spec["containers"][0]["ports"] if p["name"] == "metrics")
    status, text = http_get(f"http://{ip}:{metrics_port}/metrics")
    if status != 200 or "gocare_tokens_minted_total" not in text:
        raise Failed(f"the token service's /metrics on {metrics_port} answered {status}")
    status, _ = http_get(f"http://{ip}:{port}/metrics")
    if status == 200:
        raise Failed("the token service serves /metrics on its public port too")
    say(f"token service: /health ok, /getToken (app JWT) minted a token TokenVerifier accepts for {APP_USER} in "
        f"{APP_ROOM} dispatching {AGENT}; /metrics only on port {metrics_port}")


def check_worker(docs: list[dict[str, Any]], net: Network, lk: LiveKit, config: dict[str, Any],
                 secret: dict[str, Any]) -> None:
    spec, container, ip = ready_pod(docs, net, "worker")
    line = wait_for_log(container, "registered worker", timeout=180)
    say(f"worker: {line.strip()[:200]}")
    # a warm job process ran prewarm (the VAD and end-of-turn models, from the image) under the read-only root
    line = wait_for_log(container, "process initialized", timeout=180)
    say(f"worker: a job process initialized: {line.strip()[:160]}")
    deadline = time.monotonic() + 30
    while AGENT not in lk.log.read_text():
        if time.monotonic() > deadline:
            raise Failed(f"livekit-server's log does not show agent {AGENT} registering")
        time.sleep(1)
    check_security(container, spec["containers"][0], spec)
    check_environment(container, config, secret)
    port = spec["containers"][0]["livenessProbe"]["httpGet"]["port"]
    status, body = http_get(f"http://{ip}:{port}/worker")
    info = json.loads(body) if status == 200 else {}
    if info.get("agent_name") != AGENT:
        raise Failed(f"GET /worker on the health port answered {status} {body[:200]}")
    status, body = http_get(f"http://{ip}:{port}/")
    if status != 200:
        raise Failed(f"the worker's health check answered {status} {body[:100]} after registering")
    metrics_port = next(p["containerPort"] for p in spec["containers"][0]["ports"] if p["name"] == "metrics")
    status, text = http_get(f"http://{ip}:{metrics_port}/metrics")
    if status != 200 or "lk_agents" not in text:
        raise Failed(f"the worker's /metrics on {metrics_port} answered {status}")
    grace = spec["terminationGracePeriodSeconds"]
    drain = next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == "GOCARE_WORKER_DRAIN_TIMEOUT")
    say(f"worker: registered as {AGENT} with livekit-server, GET / 200 and /worker {info.get('worker_type')}, "
        f"/metrics on {metrics_port}; drain {drain} s within the grace period {grace} s")
    # podman 4.3 does not carry terminationGracePeriodSeconds into the container (its stop timeout stays 10 s):
    # stopped here as the kubelet stops a pod, SIGTERM and SIGKILL only after the rendered grace period
    started = time.monotonic()
    podman("stop", "--time", str(grace), container, timeout=grace + 30)
    took = time.monotonic() - started
    state = inspect(container)["State"]
    logs = podman("logs", container, check=False)
    if state["ExitCode"] != 0 or "draining worker" not in logs.stdout + logs.stderr:
        raise Failed(f"the worker stopped with SIGTERM exited {state['ExitCode']} after {took:.1f} s "
                     f"(drained: {'draining worker' in logs.stdout + logs.stderr})")
    if took >= grace:
        raise Failed(f"the worker needed the whole grace period ({took:.1f} s): it was killed, not drained")
    say(f"worker: SIGTERM drained it and it exited 0 in {took:.1f} s, within the grace period {grace} s "
        "(no call was live)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--chart", required=True, type=Path)
    parser.add_argument("--image", required=True, help="the image to run, e.g. localhost/gocare-voice:0.1.0")
    parser.add_argument("--livekit-server", required=True)
    parser.add_argument("--keep-logs", type=Path, help="copy the pods' and livekit-server's logs here")
    args = parser.parse_args()
    # a CI timeout's SIGTERM unwinds like Ctrl+C: everything started here is still removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.monotonic()
    run_id = f"{os.getpid()}"
    infra, pods = Cleanup(), Cleanup()  # pods go first, then PostgreSQL, then the network
    workdir = Path(tempfile.mkdtemp(prefix="gocare-chart-"))
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(infra.close)
            net = make_network(run_id, infra)
            say(f"podman network {net.name} ({net.subnet}, host {net.gateway})")
            password = secrets.token_urlsafe(16)
            database_url = stack.enter_context(postgres(net, password))
            stack.callback(pods.close)
            lk = start_livekit(args.livekit_server, net, workdir, pods)
            say(f"livekit-server on {lk.url}; PostgreSQL on {net.gateway}")
            jwt_secret = secrets.token_urlsafe(32)
            never_logged = [password, lk.secret, jwt_secret]
            docs = render(args.helm, args.chart, the_values(args.image, lk, database_url, jwt_secret), workdir)
            say("rendered: " + ", ".join(f"{d['kind']} {d['metadata']['name']}" for d in docs))
            run_migration(docs, net, workdir, pods, database_url, never_logged)
            config = find(docs, "ConfigMap", "gocare-voice")
            secret = find(docs, "Secret", "gocare-voice")
            podman_secret(secret, pods, workdir)
            token_service = find(docs, "Deployment", "-token-service")
            worker = find(docs, "Deployment", "-worker")
            play([config, token_service, worker], "deployments", net, workdir, pods)
            check_token_service(docs, net, lk, jwt_secret, config, secret)
            check_worker(docs, net, lk, config, secret)
            for deployment, name in ((token_service, "token-service"), (worker, "worker")):
                container = container_named(f"{deployment['metadata']['name']}-pod-0", name)
                logs = podman("logs", container, check=False)
                check_no_secrets(name, logs.stdout + logs.stderr, never_logged)
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    (args.keep_logs / f"{name}.log").write_text(logs.stdout + logs.stderr)
            if args.keep_logs:
                shutil.copy(lk.log, args.keep_logs / "livekit-server.log")
            say("no key, password or token of this run in the containers' logs")
    except Failed as failure:
        print(f"kube-play FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"OK in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
