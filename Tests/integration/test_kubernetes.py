"""Packaging (SPEC §10): the Kubernetes manifests in config/kubernetes/ and the Dockerfile.

- Every manifest passes `kubernetes-validate --strict` against pinned Kubernetes versions.
- Each role's ConfigMap config passes `outrider validate` with the Secret's files in place (the
  pod's projected volume rebuilt in a temp dir, `/etc/outrider/` rewritten to it), and starts:
  probes answer on the admin port, SIGTERM drains and exits 0, /config shows no secret.
- Consistency rules between the Deployments and their config: the three probes on the admin
  port (which must be pod-reachable), terminationGracePeriodSeconds covering drain.delay +
  drain.timeout (and the app's preStop sleep where it comes first), `restartPolicy: Always` in
  the native sidecar form, Service ports that land on a listener, container hardening, Secrets
  that hold only published example data.
- The Dockerfile: every COPY source exists and survives .dockerignore, every target directory
  of Package.swift reaches the build, the runtime packages cover the binary's shared libraries.

Docker is not available here, so the image itself is not built by this suite.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate cannot be imported (Tests/integration/requirements.txt)",
    exc_type=ImportError)
import yaml  # noqa: E402  (a dependency of kubernetes-validate)

from wire import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "config" / "kubernetes"
EXAMPLES = REPO / "config" / "examples"
ROLES = ["sidecar-proxy", "auth-container", "ambassador"]
FORMS = ["classic", "native-sidecar"]

# Kubernetes versions the manifests are validated against (schemas bundled with the pinned
# kubernetes-validate). Native sidecars need >= 1.29 (beta, on by default; GA in 1.33) and the
# preStop `sleep` action >= 1.30; 1.32 is the oldest schema this kubernetes-validate ships.
K8S_VERSIONS = ["1.32.0", "1.37.0"]

OUTRIDER_IMAGE = "ghcr.io/example/outrider:0.1.0"
IMAGE_UID = 65532


# --------------------------------------------------------------------------------------------
# loading


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifest_files() -> list[Path]:
    return sorted(K8S_DIR.rglob("*.yaml")) + sorted(K8S_DIR.rglob("*.yml"))


def _role_objects(role: str) -> dict[tuple[str, str], dict]:
    """The shared objects of a role (ConfigMap, Secret, Service) by (kind, name)."""
    out = {}
    for f in sorted((K8S_DIR / role).glob("*.yaml")):
        for d in _docs(f):
            out[(d["kind"], d["metadata"]["name"])] = d
    return out


def _deployment(role: str, form: str) -> dict:
    docs = _docs(K8S_DIR / role / form / "deployment.yaml")
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deps) == 1, f"{role}/{form}/deployment.yaml: expected one Deployment"
    return deps[0]


def _pod(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]


def _outrider(pod: dict) -> tuple[dict, str]:
    """The outrider container and where it is: 'containers' or 'initContainers'."""
    found = [(c, where) for where in ("containers", "initContainers")
             for c in pod.get(where, []) if c["image"].split(":")[0] == OUTRIDER_IMAGE.split(":")[0]]
    assert len(found) == 1, f"expected exactly one outrider container, found {len(found)}"
    return found[0]


def _apps(pod: dict) -> list[dict]:
    out, _ = _outrider(pod)
    return [c for c in pod.get("containers", []) if c is not out]


def _config_path(container: dict) -> str:
    args = container.get("args", [])
    assert "--config" in args, f"outrider args {args} do not name a config file"
    return args[args.index("--config") + 1]


def _materialize(role: str, pod: dict, container: dict, root: Path) -> dict[str, Path]:
    """Write the files the outrider container sees under its volume mounts into root + mountPath.
    Returns {mountPath: local directory}."""
    objects = _role_objects(role)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {}

    def write(base: Path, key_data: dict[str, bytes], items, label):
        chosen = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in key_data]
        for key, rel in chosen:
            assert key in key_data, f"{label} has no key {key!r}"
            dest = base / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(key_data[key])

    def source(kind, name, label):
        obj = objects.get((kind, name))
        assert obj is not None, f"{label}: {kind} {name!r} is not in config/kubernetes/{role}/"
        if kind == "ConfigMap":
            return {k: v.encode() for k, v in obj.get("data", {}).items()}
        data = {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        data.update({k: v.encode() for k, v in obj.get("stringData", {}).items()})
        return data

    for m in container.get("volumeMounts", []):
        assert "subPath" not in m, "subPath mounts never see ConfigMap/Secret updates"
        vol = volumes[m["name"]]
        base = root / m["mountPath"].lstrip("/")
        base.mkdir(parents=True, exist_ok=True)
        if "projected" in vol:
            for src in vol["projected"]["sources"]:
                if "configMap" in src:
                    s = src["configMap"]
                    write(base, source("ConfigMap", s["name"], m["name"]), s.get("items"), s["name"])
                elif "secret" in src:
                    s = src["secret"]
                    write(base, source("Secret", s["name"], m["name"]), s.get("items"), s["name"])
        elif "configMap" in vol:
            s = vol["configMap"]
            write(base, source("ConfigMap", s["name"], m["name"]), s.get("items"), s["name"])
        elif "secret" in vol:
            s = vol["secret"]
            write(base, source("Secret", s["secretName"], m["name"]), s.get("items"), s["secretName"])
        mounts[m["mountPath"]] = base
    return mounts


def _localize(text: str, mounts: dict[str, Path]) -> str:
    for mount, base in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(mount.rstrip("/") + "/", str(base) + "/")
    return text


def _local_config(role: str, form: str, root: Path) -> Path:
    """The pod's config file, mirrored under root, with mount paths rewritten to root."""
    pod = _pod(_deployment(role, form))
    container, _ = _outrider(pod)
    mounts = _materialize(role, pod, container, root)
    path = _config_path(container)
    mount = next((mp for mp in sorted(mounts, key=len, reverse=True)
                  if path.startswith(mp.rstrip("/") + "/")), None)
    assert mount is not None, f"--config {path} is not under any volume mount of the outrider container"
    local = mounts[mount] / path[len(mount.rstrip("/")) + 1:]
    assert local.is_file(), f"--config {path}: no such file in the mounted volume"
    local.write_text(_localize(local.read_text(), mounts))
    return local


def _config(role: str) -> dict:
    """The role's Outrider config (the ConfigMap's outrider.yaml), parsed."""
    cms = [d for (kind, _), d in _role_objects(role).items() if kind == "ConfigMap"]
    assert len(cms) == 1, f"{role}: expected one ConfigMap"
    return yaml.safe_load(cms[0]["data"]["outrider.yaml"])


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def _seconds(d) -> float:
    if d in (0, "0"):
        return 0.0
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(d))
    assert m, f"bad duration {d!r}"
    return int(m.group(1)) * _UNITS[m.group(2)]


def _drain(cfg: dict) -> tuple[float, float]:
    drain = cfg.get("drain") or {}
    return _seconds(drain.get("delay", "5s")), _seconds(drain.get("timeout", "30s"))


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _admin(cfg: dict) -> tuple[str, int]:
    return _host_port((cfg.get("admin") or {}).get("address", "127.0.0.1:15000"))


def _prestop_sleep(c: dict) -> float:
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    return float(pre["sleep"]["seconds"]) if "sleep" in pre else 0.0


def _resolve_port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"named port {port!r} is not declared by container {container['name']}"
    return named[port]


def _cases():
    return [pytest.param(r, f, id=f"{r}/{f}") for r in ROLES for f in FORMS]


# --------------------------------------------------------------------------------------------
# schema


def test_layout():
    assert sorted(p.name for p in K8S_DIR.iterdir() if p.is_dir()) == sorted(ROLES)
    for role in ROLES:
        kinds = sorted(kind for kind, _ in _role_objects(role))
        assert kinds.count("ConfigMap") == 1 and kinds.count("Secret") == 1, f"{role}: {kinds}"
        for form in FORMS:
            assert (K8S_DIR / role / form / "deployment.yaml").is_file(), f"{role}/{form}/deployment.yaml"
    assert (K8S_DIR / "README.md").is_file()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S_DIR)))
def test_manifest_passes_kubernetes_validate_strict(path, version):
    docs = _docs(path)
    assert docs, f"{path}: no YAML document"
    for doc in docs:
        try:
            used = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.relative_to(REPO)}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: "
                        f"{'.'.join(str(p) for p in e.path)}: {e.message} (Kubernetes {e.version})")
        assert used == version.rsplit(".", 1)[0], f"validated against {used}, wanted {version}"


def test_kubernetes_validate_cli_strict():
    """The same through the command line users would run (first pinned version)."""
    exe = Path(sys.executable).parent / "kubernetes-validate"
    if not exe.exists():
        pytest.skip("kubernetes-validate CLI not installed next to this Python")
    files = [str(p) for p in _manifest_files()]
    r = subprocess.run([str(exe), "--strict", "-k", K8S_VERSIONS[0], *files],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("INFO") >= len(files), r.stdout


# --------------------------------------------------------------------------------------------
# the config inside the pod


@pytest.mark.parametrize("role,form", _cases())
def test_configmap_passes_outrider_validate(outrider_bin, role, form, tmp_path):
    local = _local_config(role, form, tmp_path)
    r = subprocess.run([outrider_bin, "validate", "--config", str(local)], capture_output=True, text=True,
                       timeout=20, cwd=str(tmp_path))
    assert r.returncode == 0, f"{role}: outrider validate failed:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("role", ROLES)
def test_configmap_mirrors_example_config(role):
    """Same listeners (names, ports, direction) and drain timings as config/<role>.yaml."""
    pod_cfg = _config(role)
    example = yaml.safe_load((REPO / "config" / f"{role}.yaml").read_text())

    def listeners(cfg):
        return {(l["name"], _host_port(l["address"])[1], l.get("direction", "inbound")) for l in cfg["listeners"]}

    assert listeners(pod_cfg) == listeners(example)
    assert _drain(pod_cfg) == _drain(example)
    # loopback stays loopback (the ambassador's way out, the app's endpoint) and vice versa
    for pl in pod_cfg["listeners"]:
        el = next(l for l in example["listeners"] if l["name"] == pl["name"])
        assert _host_port(pl["address"])[0] == _host_port(el["address"])[0], pl["name"]
    app = next((c for c in pod_cfg["clusters"] if c["name"] == "app"), None)
    if app is not None:
        assert all(e.startswith("127.0.0.1:") for e in app["endpoints"]), "the app is reached on loopback"


@pytest.mark.parametrize("role", ROLES)
def test_pod_config_runs_probes_answer_and_sigterm_drains(outrider_bin, role, tmp_path):
    """Start the pod's config (ports moved to free ones, drain.delay shortened to 1s): /live,
    /ready and /metrics answer on the admin port; on SIGTERM /ready turns 503 and the process
    exits 0 within drain.delay plus a little; /config does not show the Secret's contents."""
    local = _local_config(role, "native-sidecar", tmp_path)
    # Edited as text: PyYAML would turn a `retry: { on: [...] }` key into `true` on the way back.
    text = local.read_text()
    cfg = yaml.safe_load(text)
    admin_port = free_port()
    moves = {cfg["admin"]["address"]: f"127.0.0.1:{admin_port}"}
    moves.update({l["address"]: f"127.0.0.1:{free_port()}" for l in cfg["listeners"]})
    for old, new in moves.items():
        assert re.search(rf"address: {re.escape(old)}\b", text), old
        text = re.sub(rf"(address: ){re.escape(old)}\b", rf"\g<1>{new}", text)
    text, n = re.subn(r"(\n\s+delay: )\S+", r"\g<1>1s", text)
    assert n == 1, "one drain.delay expected"
    local.write_text(text)

    out, err = open(tmp_path / "stdout", "wb"), open(tmp_path / "stderr", "wb")
    proc = subprocess.Popen([outrider_bin, "--config", str(local)], stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, cwd=str(tmp_path))

    def get(path, timeout=1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError:
            return None, b""

    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            status, _ = get("/ready", 0.5)
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200, f"/ready never answered 200 (exit={proc.poll()}):\n" \
                              f"{(tmp_path / 'stderr').read_text(errors='replace')[-3000:]}"
        assert get("/live")[0] == 200
        st, body = get("/metrics")
        assert st == 200 and b"outrider_build_info" in body
        st, body = get("/config")
        assert st == 200
        # config files are shown as paths and ${file:} values as <redacted>, never contents
        for (kind, name), obj in _role_objects(role).items():
            if kind != "Secret":
                continue
            for key, v in obj.get("data", {}).items():
                for line in base64.b64decode(v).decode(errors="replace").splitlines():
                    line = line.strip()
                    if len(line) >= 16 and not line.startswith(("#", "-----")):
                        assert line.encode() not in body, f"/config shows Secret {name} key {key}: {line[:24]}…"

        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        st = None
        while time.monotonic() - t0 < 0.9 and proc.poll() is None:
            st, _ = get("/ready", 0.3)
            if st == 503:
                break
            time.sleep(0.02)
        assert st == 503, f"/ready during drain.delay: {st}"
        rc = proc.wait(10)
        elapsed = time.monotonic() - t0
        assert rc == 0, f"exit {rc} after SIGTERM"
        assert 0.9 <= elapsed < 4, f"exited {elapsed:.2f}s after SIGTERM with drain.delay 1s and nothing in flight"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        out.close()
        err.close()


# --------------------------------------------------------------------------------------------
# consistency between Deployments and config


@pytest.mark.parametrize("role,form", _cases())
def test_probes_on_pod_reachable_admin_port(role, form):
    cfg = _config(role)
    host, port = _admin(cfg)
    # the kubelet probes the pod's IP from the node: a loopback admin address is unreachable
    assert host in ("0.0.0.0", "::"), f"admin.address {host}:{port} is not reachable by the kubelet's probes"
    c, _ = _outrider(_pod(_deployment(role, form)))
    assert port in [p["containerPort"] for p in c.get("ports", [])], "admin port not declared"
    want = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/live"}
    for probe, path in want.items():
        assert probe in c, f"outrider has no {probe}"
        get = c[probe].get("httpGet")
        assert get, f"{probe} must be httpGet (the image has no tools for exec probes)"
        assert get["path"] == path, f"{probe} path {get['path']}"
        assert _resolve_port(c, get["port"]) == port, f"{probe} is not on the admin port {port}"
        assert get.get("scheme", "HTTP") == "HTTP"
    # a drain started with POST /drain takes the pod out of the endpoints within drain.delay
    rp = c["readinessProbe"]
    delay, _ = _drain(cfg)
    assert rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3) < delay


@pytest.mark.parametrize("role,form", _cases())
def test_termination_grace_covers_drain(role, form):
    cfg = _config(role)
    delay, timeout = _drain(cfg)
    pod = _pod(_deployment(role, form))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    apps = _apps(pod)
    app_sleep = max((_prestop_sleep(a) for a in apps), default=0.0)
    if form == "native-sidecar":
        # the app containers stop first; the sidecar gets SIGTERM only after they have exited
        need = app_sleep + delay + timeout
    else:
        need = max(app_sleep, delay + timeout)
    assert grace > need, f"terminationGracePeriodSeconds {grace} <= {need}"
    out, _ = _outrider(pod)
    pre = (out.get("lifecycle") or {}).get("preStop")
    assert pre is None or "exec" not in pre, "the outrider image has no shell for an exec preStop"
    if _services(role):
        # clients reach these pods: the app must keep answering while Outrider still accepts
        for a in apps:
            assert _prestop_sleep(a) > delay, f"app {a['name']}: preStop sleep must outlast drain.delay {delay}s"


@pytest.mark.parametrize("role,form", _cases())
def test_sidecar_form(role, form):
    pod = _pod(_deployment(role, form))
    c, where = _outrider(pod)
    for x in pod.get("containers", []):
        assert "restartPolicy" not in x, f"containers[{x['name']}] may not set restartPolicy"
    if form == "native-sidecar":
        assert where == "initContainers"
        assert c.get("restartPolicy") == "Always", "a native sidecar is an init container with restartPolicy Always"
        assert "startupProbe" in c, "the app starts once the sidecar's startupProbe has passed"
    else:
        assert where == "containers"
        assert not pod.get("initContainers")
    assert _apps(pod), "no app container next to outrider"


def _services(role: str) -> list[dict]:
    return [d for (kind, _), d in _role_objects(role).items() if kind == "Service"]


@pytest.mark.parametrize("role,form", _cases())
def test_service_ports_land_on_listeners(role, form):
    cfg = _config(role)
    dep = _deployment(role, form)
    c, _ = _outrider(_pod(dep))
    exposed = {_host_port(l["address"])[1] for l in cfg["listeners"]
               if _host_port(l["address"])[0] not in ("127.0.0.1", "::1", "localhost")}
    services = _services(role)
    if role == "ambassador":
        assert not services, "the ambassador listens on loopback only: nothing to expose"
        assert not exposed
        return
    assert services, f"{role}: no Service"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    covered = set()
    for svc in services:
        sel = svc["spec"]["selector"]
        assert all(labels.get(k) == v for k, v in sel.items()), f"Service {svc['metadata']['name']} selects no pod"
        for p in svc["spec"]["ports"]:
            target = _resolve_port(c, p.get("targetPort", p["port"]))
            assert target in exposed, f"Service port {p['port']} -> {target}: no non-loopback listener there"
            assert target in [x["containerPort"] for x in c.get("ports", [])], f"{target} not declared"
            assert target != _admin(cfg)[1], "the admin port must not be exposed by a Service"
            covered.add(target)
    assert covered == exposed, f"listeners not reachable through a Service: {exposed - covered}"


@pytest.mark.parametrize("role,form", _cases())
def test_outrider_container_hardening(role, form):
    pod = _pod(_deployment(role, form))
    c, _ = _outrider(pod)
    assert c["image"] == OUTRIDER_IMAGE
    assert c["args"] == ["--config", "/etc/outrider/outrider.yaml"]
    psc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
    assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
    assert sc.get("runAsUser", psc.get("runAsUser")) == IMAGE_UID
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert not sc.get("capabilities", {}).get("add")
    res = c.get("resources", {})
    assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
    assert res.get("limits", {}).get("cpu") == "500m", "README/SPEC §10: a 500m limit runs one worker"
    assert res.get("limits", {}).get("memory")
    assert _config(role).get("workers", "auto") == "auto"
    assert pod.get("automountServiceAccountToken") is False


@pytest.mark.parametrize("role", ROLES)
def test_secrets_hold_only_published_examples(role):
    published = {p.read_bytes() for p in EXAMPLES.rglob("*") if p.is_file()}
    for (kind, name), obj in _role_objects(role).items():
        if kind != "Secret":
            continue
        assert obj.get("data"), f"Secret {name}: no data"
        for key, value in obj["data"].items():
            raw = base64.b64decode(value, validate=True)
            assert raw in published or b"example" in raw.lower(), \
                f"Secret {name} key {key}: not a published example from config/examples/ — real credentials?"


# --------------------------------------------------------------------------------------------
# Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, cur = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        cur += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            instr, _, rest = cur.strip().partition(" ")
            out.append((instr.upper(), rest.strip()))
            cur = ""
    return out


def _dockerignore() -> list[str]:
    return [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
            if l.strip() and not l.strip().startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last matching pattern wins; a pattern matching a parent
    directory matches everything under it; ** matches any number of directories."""
    parts = rel.split("/")
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        rx = re.escape(p).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rx = re.sub(r"\\\[([^\]]*)\\\]", r"[\1]", rx)
        for i in range(1, len(parts) + 1):
            if re.fullmatch(rx, "/".join(parts[:i])):
                ignored = not neg
                break
    return ignored


def test_dockerignore_excludes_build_and_venv():
    pats = _dockerignore()
    for path in (".build", ".build-fuzz/x", ".venv-test/bin/python", ".git/HEAD"):
        assert _ignored(path, pats), f"{path} reaches the build context"
    for path in ("Package.swift", "Sources/outrider/main.swift"):
        assert not _ignored(path, pats), f"{path} is left out of the build context"


def test_dockerfile_copy_sources_exist_in_context():
    pats = _dockerignore()
    copies = [rest for instr, rest in _dockerfile() if instr in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        args = [a for a in rest.split() if not a.startswith("--")]
        if "--from=" in rest:
            continue
        *srcs, _dest = args
        matched_any = False
        for src in srcs:
            hits = [p for p in REPO.glob(src)]
            optional = any(ch in src for ch in "*?[")
            assert hits or optional, f"COPY {src}: no such path"
            for h in hits:
                rel = str(h.relative_to(REPO))
                assert not _ignored(rel, pats), f"COPY {rel}: excluded by .dockerignore"
                matched_any = True
        assert matched_any, f"COPY {rest}: nothing to copy"


def _declared_target_dirs() -> list[str]:
    text = (REPO / "Package.swift").read_text()
    dirs = []
    for m in re.finditer(r"\.(target|executableTarget|testTarget|systemLibrary)\(\s*name:\s*\"([^\"]+)\"(.*?)\)\s*,?\s*\n",
                         text, re.S):
        kind, name, rest = m.groups()
        pm = re.search(r"path:\s*\"([^\"]+)\"", rest)
        dirs.append(pm.group(1) if pm else f"{'Tests' if kind == 'testTarget' else 'Sources'}/{name}")
    return dirs


def test_every_package_target_reaches_the_build_context():
    """SwiftPM refuses a package whose declared target directories are missing, test targets
    included, even when building one product."""
    dirs = _declared_target_dirs()
    assert "Sources/outrider" in dirs and any(d.startswith("Tests/") for d in dirs), dirs
    copied = set()
    for instr, rest in _dockerfile():
        if instr == "COPY" and "--from=" not in rest:
            copied.update(a.rstrip("/") for a in rest.split()[:-1] if not a.startswith("--"))
    pats = _dockerignore()
    for d in dirs:
        assert (REPO / d).is_dir(), f"Package.swift names {d}, which does not exist"
        assert d.split("/")[0] in copied, f"{d} is not copied into the build stage"
        assert not _ignored(d, pats), f"{d} is excluded by .dockerignore"


def test_dockerfile_shape():
    ins = _dockerfile()
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for instr, rest in ins if instr == "ARG" and "=" in rest)
    froms = [rest for instr, rest in ins if instr == "FROM"]
    assert len(froms) == 2, "multi-stage: build and runtime"
    # the builder is Swift >= the tools version of Package.swift
    tools = re.search(r"swift-tools-version:\s*(\d+)\.(\d+)", (REPO / "Package.swift").read_text())
    m = re.fullmatch(r"swift:(\d+)\.(\d+)(?:\.\d+)?-bookworm", args["SWIFT_IMAGE"])
    assert m, args["SWIFT_IMAGE"]
    assert (int(m[1]), int(m[2])) >= (int(tools[1]), int(tools[2]))
    assert args["RUNTIME_IMAGE"] == "debian:bookworm-slim"
    runs = " ".join(rest for instr, rest in ins if instr == "RUN")
    assert "swift build -c release --product outrider --static-swift-stdlib" in runs
    user = [rest for instr, rest in ins if instr == "USER"]
    assert user and user[-1].split(":")[0] == str(IMAGE_UID), "numeric non-root USER matching the manifests"
    assert [rest for instr, rest in ins if instr == "ENTRYPOINT"] == ['["outrider"]']
    exposed = {p for instr, rest in ins if instr == "EXPOSE" for p in rest.split()}
    assert {"15000", "15001", "15006"} <= exposed
    copies = [rest for instr, rest in ins if instr == "COPY" and "--from=build" in rest]
    assert copies and copies[-1].endswith("/usr/local/bin/outrider")
    assert not any(instr == "ENV" and "OUTRIDER_CONFIG" in rest for instr, rest in ins), \
        "no default OUTRIDER_CONFIG: without a file the image is the zero-config sidecar (SPEC §1)"


def _runtime_packages() -> set[str]:
    ins = _dockerfile()
    last_from = max(i for i, (instr, _) in enumerate(ins) if instr == "FROM")
    pkgs = set()
    for instr, rest in ins[last_from:]:
        if instr == "RUN" and "apt-get install" in rest:
            seg = rest.split("apt-get install", 1)[1].split("&&")[0]
            pkgs.update(w for w in seg.split() if not w.startswith("-"))
    return pkgs


def test_runtime_packages_cover_the_binarys_libraries(outrider_bin):
    """Every shared library the binary loads, other than the Swift runtime (linked statically in
    the image), comes from a package the runtime stage installs or from bookworm-slim itself."""
    if not (shutil.which("ldd") and shutil.which("dpkg")):
        pytest.skip("needs ldd and dpkg")
    osr = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if "VERSION_CODENAME=bookworm" not in osr:
        pytest.skip("package names are checked on Debian 12 (bookworm), the image's release")
    base = {"libc6", "libgcc-s1", "zlib1g"}  # essential in debian:bookworm-slim
    pkgs = _runtime_packages()
    assert {"libssl3", "libnghttp2-14", "libcrypt1", "ca-certificates"} <= pkgs, pkgs
    out = subprocess.run(["ldd", outrider_bin], capture_output=True, text=True, timeout=20).stdout
    missing = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line)
        if not m or "/swift/" in m.group(1):
            continue
        lib = os.path.realpath(m.group(1))
        r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        if r.returncode != 0:
            r = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
        assert r.returncode == 0, f"{lib}: no Debian package owns it"
        pkg = r.stdout.split(":")[0].strip()
        if pkg not in pkgs and pkg not in base:
            missing.append(f"{m.group(1)} ({pkg})")
    assert not missing, f"the runtime stage lacks: {missing}"
