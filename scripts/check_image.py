"""Build the production image's file set without a Docker engine, and prove that it runs.

    .venv/bin/python scripts/check_image.py [--context DIR] [--dockerfile PATH] [--keep]

Run by scripts/test (so by `make test` and CI). It reads the Dockerfile with Docker's own
parser (the `dockerfile` package) and the build context with Docker's own .dockerignore rules
(docker-py's matcher), lays the image's files out under a temporary root as the Dockerfile
does, installs them in a fresh virtualenv and starts the server from there.

What it mirrors, instruction by instruction (any other instruction, flag or RUN command fails
the check, so that a change to the Dockerfile is taught here rather than silently skipped):

- FROM python:X.Y…: a fresh virtualenv (`uv venv`) on Python X.Y when uv finds it on this
  machine (else on this interpreter, and the output says so).
- ENV: set for every later step; a value that is an absolute path is moved under the
  temporary root (/app becomes <tmp>/root/app).
- WORKDIR: where the later steps run (under the temporary root).
- COPY src… dest: from the build context (the directory's files as `docker build` sees them,
  minus what .dockerignore excludes) as Docker copies: a directory's contents into dest, a file
  into dest/ or as dest. A source that is missing or excluded fails, as the build would.
- RUN, one `&&` step at a time: `useradd` is noted (see USER); `mkdir -p` makes its folders
  under the temporary root; `chown` gives them to the user the server runs as; a step that
  starts with `python` or `pip` (after VAR=value words) runs in sh in WORKDIR with the
  virtualenv first on PATH, `pip` being `uv pip` into it (the same resolution, faster).
- USER: what follows (migrate, check, the server) runs as `nobody` when this check runs as root,
  so that anything writing outside the var folder fails as it would in the image.
- EXPOSE PORT and CMD (exec form): the server, bound to 127.0.0.1 on a free port in place of
  0.0.0.0:PORT.
- HEALTHCHECK CMD: run (with the free port) once the server answers: it must pass.

Then, beyond the Dockerfile's own steps:

- the image holds nothing that git ignores (.env, var/, .venv, caches, egg-info) and no .git;
- every top-level package in WORKDIR is imported from there, also by a program started
  outside it (celery's and gunicorn's entry points), never from the copies in site-packages;
- `manage.py check --deploy` with a production environment (DEBUG off, real-looking secrets, a
  public https host): errors fail, and so does every security warning (Django's deployment
  checklist) not in ACCEPTED_DEPLOY_WARNINGS; other apps' warnings (drf-spectacular's notes on
  the API schema, which the schema's own tests hold) are listed, not failed;
- `manage.py migrate` (docker-compose's `migrate` service), on SQLite in the var folder;
- the login page renders for the public host behind a TLS proxy, and a static file it links is
  served (whitenoise, from the collected manifest).
"""

import argparse
import os
import re
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
from pathlib import Path

import dockerfile
from cryptography.fernet import Fernet
from docker.utils.build import PatternMatcher

REPO = Path(__file__).resolve().parent.parent

# `check --deploy` warnings that an operator, not the image, decides (docs/deploy.md):
ACCEPTED_DEPLOY_WARNINGS = {
    # HSTS for every subdomain of the operator's domain, and submitting it to the browsers'
    # preload lists, commit hosts Relay knows nothing about: SECURE_HSTS_INCLUDE_SUBDOMAINS
    # and SECURE_HSTS_PRELOAD turn them on from the environment.
    "security.W005",
    "security.W021",
}
PUBLIC_HOST = "relay.example.com"
# A server that has not answered at all after this long is not starting.
START_TIMEOUT_SECONDS = 180
STEP_TIMEOUT_SECONDS = 600
UNPRIVILEGED_UID = 65534  # nobody


class CheckFailed(Exception):
    pass


def shell_split(text: str, *, on_and: bool) -> list[str]:
    """Split shell text on `&&` (on_and) or on blanks, outside quotes and $(…)."""
    parts, current, quote, depth, i = [], [], "", 0, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif text.startswith("$(", i):
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0 and on_and and text.startswith("&&", i):
            parts.append("".join(current).strip())
            current = []
            i += 2
            continue
        elif depth == 0 and not on_and and char.isspace():
            if current:
                parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


class Image:
    """The image being laid out under a temporary directory."""

    def __init__(self, *, tmp: Path, context: Path, ignore_patterns: list[str]):
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        self.context = context
        self.venv = tmp / "venv"
        self.workdir = self.root
        self.env: dict[str, str] = {}
        self.user = ""
        self.exposed: list[str] = []
        self.healthcheck: list[str] | str | None = None
        self.cmd: list[str] = []
        self.copied: list[str] = []  # context-relative paths of every file copied
        matcher = PatternMatcher(ignore_patterns)
        # docker-py keeps .dockerignore in the context as the classic builder did; BuildKit
        # leaves it (and the Dockerfile) out of COPY when .dockerignore names them.
        matcher.patterns = [p for p in matcher.patterns if p.cleaned_pattern != ".dockerignore"]
        self.context_paths = set(matcher.walk(str(context)))
        self.as_root = os.geteuid() == 0
        self.shims = tmp / "shims"

    # -- helpers --------------------------------------------------------------------------
    def rebase(self, path: str) -> Path:
        return self.root / path.lstrip("/") if path.startswith("/") else self.workdir / path

    def base_env(self) -> dict[str, str]:
        env = {
            "PATH": f"{self.shims}:{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.tmp / "home"),
            "LANG": "C.UTF-8",
            "VIRTUAL_ENV": str(self.venv),
            "UV_PYTHON_DOWNLOADS": "never",
        }
        # How this machine reaches the package index (uv's settings, certificates, proxies).
        for name, value in os.environ.items():
            if name.startswith(("UV_", "SSL_CERT_")) or name.lower().endswith("_proxy"):
                env[name] = value
        if "UV_CACHE_DIR" not in env:
            env["UV_CACHE_DIR"] = str(Path.home() / ".cache" / "uv")
        env.update(self.env)
        return env

    def run(self, argv, *, env=None, as_user=False, cwd=None, timeout=STEP_TIMEOUT_SECONDS):
        user = {}
        if as_user and self.user and self.as_root:
            user = {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_UID, "extra_groups": []}
        result = subprocess.run(
            argv,
            cwd=cwd or self.workdir,
            env=env or self.base_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **user,
        )
        return result

    # -- instructions ---------------------------------------------------------------------
    def from_(self, command) -> None:
        image = command.value[0]
        match = re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", image)
        if not match:
            raise CheckFailed(f"FROM {image}: only python:X.Y images are mirrored")
        uv = REPO / ".venv" / "bin" / "uv"
        uv = uv if uv.exists() else Path(shutil.which("uv") or "uv")
        self.uv = uv
        env = self.base_env()
        made = subprocess.run(
            [uv, "venv", "--quiet", "--python", match[1], self.venv],
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode:
            print(f"   Python {match[1]} not found here: the virtualenv uses {sys.version[:6]}")
            subprocess.run(
                [uv, "venv", "--quiet", "--python", sys.executable, self.venv],
                env=env,
                cwd=self.tmp,
                check=True,
            )
        self.shims.mkdir()
        # pip compiles bytecode as it installs; so does the shim, so that start-up compares.
        shim = self.shims / "pip"
        shim.write_text(f'#!/bin/sh\nexec "{uv}" pip "$@" --compile-bytecode --quiet\n')
        shim.chmod(0o755)

    def env_(self, command) -> None:
        values = command.value
        for name, value in zip(values[::2], values[1::2], strict=True):
            if "$" in value:
                raise CheckFailed(f"ENV {name}={value}: expansions are not mirrored")
            self.env[name] = str(self.rebase(value)) if value.startswith("/") else value

    def workdir_(self, command) -> None:
        self.workdir = self.rebase(command.value[0])
        self.workdir.mkdir(parents=True, exist_ok=True)

    def copy(self, command) -> None:
        if command.flags:
            raise CheckFailed(f"{command.original}: COPY flags are not mirrored")
        *sources, dest = command.value
        target = self.rebase(dest)
        into_dir = dest.endswith("/") or len(sources) > 1 or target.is_dir()
        for source in sources:
            rel = os.path.normpath(source).lstrip("/")
            if rel in (".", ""):
                members = sorted(self.context_paths)
            elif rel in self.context_paths:
                members = [rel] + sorted(p for p in self.context_paths if p.startswith(rel + "/"))
            else:
                raise CheckFailed(
                    f"{command.original}: {source} is not in the build context "
                    "(missing, or excluded by .dockerignore)"
                )
            for member in members:
                origin = self.context / member
                if rel in (".", ""):
                    destination = target / member
                elif origin.is_dir() or member != rel:
                    # A directory's contents go into dest (Docker copies the contents).
                    inner = os.path.relpath(member, rel)
                    destination = target / inner if inner != "." else target
                else:
                    destination = target / Path(member).name if into_dir else target
                if origin.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)
                self.copied.append(member)

    def run_(self, command) -> None:
        if command.flags or command.json:
            raise CheckFailed(f"{command.original}: only shell-form RUN without flags")
        for step in shell_split(command.value[0], on_and=True):
            words = shell_split(step, on_and=False)
            program_at = next(
                (i for i, w in enumerate(words) if not re.match(r"^[A-Za-z_]\w*=", w)),
                len(words),
            )
            program = words[program_at] if program_at < len(words) else ""
            if program in ("useradd", "adduser"):
                print(
                    f"   {program} {words[-1]}: the server runs as nobody (when the check is root)"
                )
            elif program == "mkdir":
                for word in words[1:]:
                    if not word.startswith("-"):
                        self.rebase(word).mkdir(parents=True, exist_ok=True)
            elif program == "chown":
                for word in words[2:]:
                    if not word.startswith("-") and self.as_root:
                        os.chown(self.rebase(word), UNPRIVILEGED_UID, UNPRIVILEGED_UID)
            elif program in ("python", "pip"):
                started = time.monotonic()
                result = self.run(["sh", "-c", step])
                if result.returncode:
                    raise CheckFailed(
                        f"RUN {step}\nfailed ({result.returncode}):\n"
                        f"{result.stdout[-3000:]}{result.stderr[-6000:]}"
                    )
                print(f"   {step[:90]}: ok in {time.monotonic() - started:.1f} s")
            else:
                raise CheckFailed(f"RUN step not mirrored (teach {__file__}): {step}")

    def user_(self, command) -> None:
        self.user = command.value[0]

    def expose(self, command) -> None:
        self.exposed.extend(v.split("/")[0] for v in command.value)

    def healthcheck_(self, command) -> None:
        if command.value[0] != "CMD":
            raise CheckFailed(f"{command.original}: only HEALTHCHECK CMD is mirrored")
        self.healthcheck = list(command.value[1:]) if command.json else command.value[1]

    def cmd_(self, command) -> None:
        if not command.json:
            raise CheckFailed(f"{command.original}: only the exec form of CMD is mirrored")
        self.cmd = list(command.value)

    HANDLERS = {
        "FROM": from_,
        "ENV": env_,
        "WORKDIR": workdir_,
        "COPY": copy,
        "RUN": run_,
        "USER": user_,
        "EXPOSE": expose,
        "HEALTHCHECK": healthcheck_,
        "CMD": cmd_,
    }

    def build(self, dockerfile_path: Path) -> None:
        for command in dockerfile.parse_file(str(dockerfile_path)):
            handler = self.HANDLERS.get(command.cmd.upper())
            if handler is None:
                raise CheckFailed(f"line {command.start_line}: {command.cmd} is not mirrored")
            handler(self, command)
        self.root.chmod(0o755)
        self.tmp.chmod(0o755)

    # -- what the image must hold and do -------------------------------------------------
    def check_file_set(self) -> None:
        in_git = [p for p in self.copied if p == ".git" or p.startswith(".git/")]
        ignored = subprocess.run(
            ["git", "-C", REPO, "check-ignore", "--no-index", "--stdin"],
            input="\n".join(self.copied),
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        bad = sorted(set(in_git + ignored))
        if bad:
            shown = ", ".join(bad[:10]) + (" …" if len(bad) > 10 else "")
            raise CheckFailed(
                f"the image would hold {len(bad)} files that git ignores (add them to "
                f".dockerignore): {shown}"
            )
        print(f"   {len(self.copied)} files copied; none that git ignores")

    def check_imports(self, env) -> None:
        packages = sorted(p.parent.name for p in self.workdir.glob("*/__init__.py"))
        probe = self.tmp / "probe.py"
        probe.write_text(
            "import importlib, sys\n"
            "for name in sys.argv[1:]:\n"
            "    print(name, importlib.import_module(name).__file__)\n"
        )
        probe.chmod(0o644)
        result = self.run(["python", str(probe), *packages], env=env, as_user=True)
        if result.returncode:
            raise CheckFailed(f"importing the apps failed:\n{result.stderr[-4000:]}")
        elsewhere = [
            line
            for line in result.stdout.splitlines()
            if not line.split(" ", 1)[1].startswith(str(self.workdir) + "/")
        ]
        if elsewhere:
            raise CheckFailed(
                "a program started outside WORKDIR (celery, gunicorn) imports these apps from "
                "elsewhere, without their templates and data files:\n  " + "\n  ".join(elsewhere)
            )
        print(f"   {len(packages)} packages imported from WORKDIR: {', '.join(packages)}")


def production_env(image: Image) -> dict[str, str]:
    env = image.base_env()
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "RELAY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "ALLOWED_HOSTS": PUBLIC_HOST,
            "CSRF_TRUSTED_ORIGINS": f"https://{PUBLIC_HOST}",
            "PUBLIC_BASE_URL": f"https://{PUBLIC_HOST}",
        }
    )
    return env


def check_deploy(image: Image, env) -> None:
    result = image.run(["python", "manage.py", "check", "--deploy"], env=env, as_user=True)
    output = result.stdout + result.stderr
    if result.returncode:
        raise CheckFailed(f"manage.py check --deploy failed:\n{output[-6000:]}")
    warnings = re.findall(r"\((\w+\.W\d+)\)", output)
    refused = sorted({w for w in warnings if w.startswith("security.")} - ACCEPTED_DEPLOY_WARNINGS)
    if refused:
        raise CheckFailed(f"check --deploy warns {', '.join(refused)}:\n{output[-6000:]}")
    others = sorted({w for w in warnings if not w.startswith("security.")})
    print(
        f"   check --deploy: no errors; security warnings accepted: "
        f"{sorted(ACCEPTED_DEPLOY_WARNINGS & set(warnings)) or 'none'}"
        + (f"; other apps' warnings (not deployment's): {others}" if others else "")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(image: Image, env) -> None:
    if not image.cmd:
        raise CheckFailed("the Dockerfile has no CMD")
    port = str(free_port())

    def local(text: str) -> str:
        for exposed in image.exposed:
            text = text.replace(f"0.0.0.0:{exposed}", f"127.0.0.1:{port}")
            text = text.replace(f"127.0.0.1:{exposed}", f"127.0.0.1:{port}")
        return text

    argv = [local(arg) for arg in image.cmd]
    if not any(f"127.0.0.1:{port}" in arg for arg in argv):
        raise CheckFailed(f"CMD {image.cmd} does not bind an EXPOSEd port ({image.exposed})")
    log = (image.tmp / "server.log").open("w")
    user = {}
    if image.user and image.as_root:
        user = {"user": UNPRIVILEGED_UID, "group": UNPRIVILEGED_UID, "extra_groups": []}
    server = subprocess.Popen(
        argv,
        cwd=image.workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **user,
    )
    try:
        if image.healthcheck is None:
            raise CheckFailed("the Dockerfile has no HEALTHCHECK")
        health = (
            [local(a) for a in image.healthcheck]
            if isinstance(image.healthcheck, list)
            else ["sh", "-c", local(image.healthcheck)]
        )
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        # Up when it answers the public host (the app is loaded); only then the HEALTHCHECK,
        # exactly as Docker runs it: a failure now is the check's answer, not a slow start.
        while True:
            if server.poll() is not None:
                raise CheckFailed(
                    f"the server stopped ({server.returncode}):\n{_tail(image.tmp / 'server.log')}"
                )
            try:
                _get(f"{base}/healthz/", timeout=60)
                break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() - started > START_TIMEOUT_SECONDS:
                    raise CheckFailed(
                        f"no answer after {START_TIMEOUT_SECONDS} s:\n"
                        f"{_tail(image.tmp / 'server.log')}"
                    ) from None
                time.sleep(0.5)
        print(f"   {' '.join(argv[:2])}: up after {time.monotonic() - started:.1f} s")
        checked = image.run(health, env=env, as_user=True, timeout=30)
        if checked.returncode:
            raise CheckFailed(
                f"HEALTHCHECK fails ({checked.returncode}): {checked.stderr[-2000:]}\n"
                f"{_tail(image.tmp / 'server.log')}"
            )
        print("   HEALTHCHECK passes")
        page = _get(f"{base}/login/")
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
        if not assets:
            raise CheckFailed("the login page links no static file")
        for asset in assets[:3]:
            _get(base + asset)
        print(f"   /login/ renders for https://{PUBLIC_HOST}; {assets[0]} is served")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _get(url: str, *, timeout: float = 30) -> str:
    """GET as the public host behind a TLS-terminating proxy; anything but 200 fails."""
    request = urllib.request.Request(  # noqa: S310 - a local URL this script built
        url, headers={"Host": PUBLIC_HOST, "X-Forwarded-Proto": "https"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # an answer, so not a URLError to wait on
        raise CheckFailed(f"GET {url} answered {exc.code}") from exc


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--context", type=Path, default=REPO, help="the build context")
    parser.add_argument("--dockerfile", type=Path, help="default: CONTEXT/Dockerfile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    context = args.context.resolve()
    dockerfile_path = args.dockerfile or context / "Dockerfile"
    ignore_file = context / ".dockerignore"
    patterns = ignore_file.read_text().splitlines() if ignore_file.exists() else []
    patterns = [p.strip() for p in patterns if p.strip() and not p.lstrip().startswith("#")]

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="relay-image-"))
    print(f"== image check: {dockerfile_path} with context {context} in {tmp}")
    try:
        image = Image(tmp=tmp, context=context, ignore_patterns=patterns)
        image.build(dockerfile_path)
        image.check_file_set()
        env = production_env(image)
        image.check_imports(env)
        check_deploy(image, env)
        migrate = image.run(["python", "manage.py", "migrate", "--no-input"], env=env, as_user=True)
        if migrate.returncode:
            raise CheckFailed(f"manage.py migrate failed:\n{migrate.stderr[-4000:]}")
        print("   manage.py migrate: ok")
        serve(image, env)
    except CheckFailed as exc:
        sys.stdout.flush()
        print(f"image check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"   kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"== image check passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
