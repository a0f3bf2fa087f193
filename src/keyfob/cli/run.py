"""``keyfob run --set P/E/N [--set …] -- CMD``: run CMD with leases where its keys would be.

Built on ``keyfob.sdk`` with the agent token: one workflow lease per set (TTL capped by
the grant), the provider's own variables pointed at keyfob (``OPENAI_BASE_URL`` +
``OPENAI_API_KEY=<lease>``, whatever the set's preset declares) plus
``KEYFOB_PROXY_URL_<SET>`` and ``KEYFOB_LEASE_<SET>``. CMD inherits stdin, stdout and
stderr (its TTY, unrewritten), never the agent token. A child's environment cannot
change, so a long command keeps its leases: they are renewed (same token, a new term,
capped by the grant) at two thirds of each term. Signals are passed on; when CMD exits
the leases are revoked and ``keyfob run`` exits with CMD's code (128 + N if a signal
ended it). Anything keyfob-side that fails is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer

from keyfob.ca_bundle import merged_bundle
from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.server_trust import CA_FILE_VARIABLE, ServerTrust

if TYPE_CHECKING:
    # Imported where used: the SDK imports httpx, which the other commands do not need.
    from keyfob.sdk import AgentClient, Grant, Lease

KEYFOB_ERROR = 2  # keyfob-side failure: never a code CMD could have meant
NOT_FOUND = 127  # CMD could not be started (as a shell says it)
RENEW_AT = 2 / 3  # of a term: renew with a third of the lease's life still left
MASKED = "kfl_********"
# What CMD must not inherit: the agent token, and key material or credentials a server's
# environment may hold that have no place there.
WITHHELD = (
    "KEYFOB_TOKEN",
    "KEYFOB_LEASE",
    "KEYFOB_MASTER_KEY",
    "KEYFOB_PKCS11_PIN",
    "KEYFOB_DATABASE_URL",
    "KEYFOB_AUDIT_SHIP_WEBHOOK_TOKEN",
    "KEYFOB_AUDIT_SHIP_WEBHOOK_SECRET",
)
# Signals passed on to CMD. SIGINT from the terminal already reached CMD (same process
# group); it is passed on only when it came from elsewhere (``kill -INT``).
FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


@dataclass(frozen=True)
class Target:
    """One set CMD may use: its proxy route and the variables its preset declares."""

    secret_set: str
    proxy_url: str
    grant: Grant

    @property
    def suffix(self) -> str:
        """``openai/prod/default`` → ``OPENAI_PROD_DEFAULT``."""
        return re.sub(r"[^A-Z0-9]", "_", self.secret_set.upper())

    def variables(self, lease: str) -> dict[str, str]:
        values = {"proxy_url": self.proxy_url, "lease": lease}
        declared = {
            name: template.replace("{proxy_url}", values["proxy_url"]).replace(
                "{lease}", values["lease"]
            )
            for name, template in self.grant.env.items()
        }
        return {
            **declared,
            f"KEYFOB_PROXY_URL_{self.suffix}": self.proxy_url,
            f"KEYFOB_LEASE_{self.suffix}": lease,
        }


PLACEHOLDER = "keyfob-placeholder"  # what the provider's key variables hold via the proxy
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
BUNDLE_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
)


def forward_proxy_env(
    targets: list[Target], credential: str, proxy: str, bundle: str, keyfob_addr: str
) -> dict[str, str]:
    """Variables for the forward proxy mode: the proxy (with the credential) in both
    cases, keyfob itself left direct, every CA-bundle variable at the merged bundle, and a
    placeholder where each provider's key would be (SDKs insist on one). Base-URL
    variables are left out: clients go to the provider's own URL through the proxy."""
    url = f"http://keyfob:{credential}@{proxy}"
    env = dict.fromkeys(PROXY_VARIABLES, url)
    direct = urlsplit(keyfob_addr).hostname or "127.0.0.1"
    env["NO_PROXY"] = env["no_proxy"] = direct
    env.update(dict.fromkeys(BUNDLE_VARIABLES, bundle))
    for target in targets:
        for name, template in target.grant.env.items():
            if "{proxy_url}" in template:
                continue
            env[name] = template.replace("{lease}", PLACEHOLDER)
    return env


PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def trust_env(addr: str, environ: Mapping[str, str], workdir: Path | None) -> dict[str, str]:
    """CMD calls keyfob's proxy route at ``addr`` itself. Over https with ``KEYFOB_CA_FILE``
    it must trust that CA too: every CA-bundle variable at a bundle of the system's roots
    plus that file (written into ``workdir``; ``None`` for a dry run), as the forward
    proxy mode does for its CA. Otherwise CMD keeps the environment's own trust."""
    ca_file = ServerTrust.from_environ(environ).ca_file
    if urlsplit(addr).scheme != "https" or ca_file is None:
        return {}
    if workdir is None:
        return dict.fromkeys(BUNDLE_VARIABLES, "<bundle>")
    try:
        text = ca_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {ca_file} ({CA_FILE_VARIABLE}): {exc}") from None
    # Its certificates only: a file that also holds a private key keeps it to itself.
    ca_pem = "".join(block + "\n" for block in PEM_CERTIFICATE.findall(text))
    if not ca_pem:
        raise CliError(f"{ca_file} ({CA_FILE_VARIABLE}) holds no PEM certificate")
    bundle = workdir / "bundle.pem"
    bundle.write_text(merged_bundle(ca_pem, label=f"keyfob's CA ({CA_FILE_VARIABLE})"))
    return dict.fromkeys(BUNDLE_VARIABLES, str(bundle))


def plan_env(
    targets: list[Target], leases: Mapping[str, str], base: Mapping[str, str]
) -> dict[str, str]:
    """CMD's environment: ``base`` without the agent token, plus each set's variables."""
    env = {k: v for k, v in base.items() if k not in WITHHELD}
    owner: dict[str, str] = {}
    for target in targets:
        for name, value in target.variables(leases[target.secret_set]).items():
            if name in owner:
                raise CliError(
                    f"{owner[name]} and {target.secret_set} both set {name}; "
                    "run them in separate commands"
                )
            owner[name] = target.secret_set
            env[name] = value
    return env


class Renewer:
    """Renews each workflow lease at two thirds of its term until stopped or refused."""

    def __init__(self, agent: AgentClient, leases: dict[str, Lease], warn: Callable[[str], None]):
        self._agent = agent
        self._leases = leases
        self._warn = warn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyfob-run-renew", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from keyfob.sdk import KeyfobError

        while self._leases:
            # Wake for the lease whose renewal is due first.
            due = min(lease.ttl * (1 - RENEW_AT) for lease in self._leases.values())
            wait = min(lease.remaining() - due for lease in self._leases.values())
            if self._stop.wait(max(wait, 0.05)):
                return
            for name, lease in list(self._leases.items()):
                if lease.remaining() > lease.ttl * (1 - RENEW_AT):
                    continue
                try:
                    self._leases[name] = self._agent.renew(lease, lease.ttl)
                except KeyfobError as exc:
                    # CMD keeps running; its calls on this set fail once the lease ends.
                    self._warn(f"cannot renew the lease on {name}: {exc.detail}")
                    del self._leases[name]


def _agent_token(ctx: typer.Context) -> str:
    token = state(ctx).token()
    if token is None or not token.reveal().startswith("kfa_"):
        raise CliError(
            "`keyfob run` needs an agent token (kfa_…): set KEYFOB_TOKEN or pass --token-file "
            "(`keyfob agent create` prints one)"
        )
    return token.reveal()


def _targets(agent: AgentClient, sets: list[str]) -> list[Target]:
    grants = {g.secret_set: g for g in agent.grants()}
    targets = []
    for path in dict.fromkeys(sets):
        grant = grants.get(path)
        if grant is None:
            raise CliError(
                f"secret set {path} is not among this agent's grants "
                "(it does not exist, or it is not granted to this agent)"
            )
        if "workflow" not in grant.scopes:
            raise CliError(
                f"the grant on {path} does not allow workflow leases, which `keyfob run` "
                "needs (ask an operator to add the workflow scope)"
            )
        targets.append(Target(path, agent.proxy_url(path), grant))
    return targets


def _mint(
    agent: AgentClient, targets: list[Target], ttl: int | None, wait: float | None
) -> dict[str, Lease]:
    from keyfob.sdk import ApprovalRequired

    leases: dict[str, Lease] = {}
    try:
        for target in targets:
            leases[target.secret_set] = agent.mint_lease(
                target.secret_set,
                scope="workflow",
                ttl=ttl or target.grant.max_lease_ttl,
                wait=wait,
            )
    except ApprovalRequired as exc:
        _revoke(agent, leases, _stderr)
        raise CliError(
            f"{exc.detail}; approve it (`keyfob lease approve {exc.request_id}`), or run "
            "with --wait SECONDS to wait for the approval"
        ) from None
    except BaseException:
        _revoke(agent, leases, _stderr)
        raise
    return leases


def _revoke(agent: AgentClient, leases: Mapping[str, Lease], warn: Callable[[str], None]) -> None:
    from keyfob.sdk import Conflict, KeyfobError, NotFound

    for name, lease in leases.items():
        try:
            agent.revoke(lease)
        except (Conflict, NotFound):
            pass  # already expired or revoked: it opens nothing either way
        except KeyfobError as exc:
            warn(f"could not revoke the lease on {name} ({exc.detail}); it expires on its own")


def _stderr(message: str) -> None:
    typer.echo(f"keyfob run: {message}", err=True)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def supervise(command: list[str], env: Mapping[str, str]) -> int:
    """Start ``command`` with ``env`` and inherited stdio; pass signals on; its exit code.

    The handlers are in place before the child starts: a signal that arrives while it is
    being started is held and passed on once it exists (with the handlers installed after
    the start, a SIGTERM in between ended ``keyfob run`` and left the child running)."""
    child: subprocess.Popen[bytes] | None = None
    held: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is None:
            held.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not _from_terminal():
            forward(signum, frame)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        child = subprocess.Popen(command, env=dict(env))  # noqa: S603 - the user's own command
        while held:
            forward(held.pop(0), None)
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _from_terminal() -> bool:
    """Whether a SIGINT most likely came from the terminal (we are its foreground group)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def run(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="The command.")],
    secret_sets: Annotated[
        list[str],
        typer.Option("--set", metavar="P/E/N", help="A secret set CMD may use (repeatable)."),
    ],
    ttl: Annotated[
        int | None,
        typer.Option(metavar="SECONDS", min=1, help="Lease term (default and cap: the grant's)."),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait", metavar="SECONDS", min=0, help="Under approval: wait this long for it."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the variables CMD would get (leases masked)."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="With --dry-run: as JSON.")] = False,
    forward_proxy: Annotated[
        str | None,
        typer.Option(
            "--forward-proxy",
            metavar="HOST:PORT",
            help="Use keyfob's forward proxy there (default KEYFOB_PROXY_LISTEN): "
            "HTTPS_PROXY, a CA bundle and placeholder keys instead of base URLs.",
        ),
    ] = None,
) -> None:
    """Run CMD with leases for the sets where its keys would be (agent token)."""
    from keyfob.sdk import AgentClient, KeyfobError

    if not command:
        _fail("no command: keyfob run --set P/E/N -- CMD [ARGS]...")
    cli = state(ctx)  # a bad KEYFOB_* variable is reported as by every other command
    try:
        agent = AgentClient(cli.addr, _agent_token(ctx), transport=cli.wiring.transport)
    except (CliError, KeyfobError) as exc:
        _fail(exc)
    proxy = forward_proxy or cli.settings.proxy_listen
    try:
        if proxy:
            code = _run_forward(agent, command, secret_sets, ttl, proxy, dry_run, json_out)
        else:
            code = _run(agent, command, secret_sets, ttl, wait, dry_run, json_out)
    finally:
        agent.close()
    raise typer.Exit(code)


def _run(
    agent: AgentClient,
    command: list[str],
    secret_sets: list[str],
    ttl: int | None,
    wait: float | None,
    dry_run: bool,
    json_out: bool,
) -> int:
    from keyfob.sdk import KeyfobError

    try:
        targets = _targets(agent, secret_sets)
        if dry_run:
            env = plan_env(targets, {t.secret_set: MASKED for t in targets}, {})
            env.update(trust_env(agent.addr, os.environ, None))
            _print_plan(env, command, json_out)
            return 0
        leases = _mint(agent, targets, ttl, wait)
    except (CliError, KeyfobError) as exc:
        _fail(exc)
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-run-"))
    try:
        tokens = {name: lease.token.reveal() for name, lease in leases.items()}
        env = plan_env(targets, tokens, os.environ)
        env.update(trust_env(agent.addr, os.environ, workdir))
    except CliError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        _revoke(agent, leases, _stderr)
        _fail(exc)
    renewer = Renewer(agent, dict(leases), _stderr)
    renewer.start()
    try:
        returncode = supervise(command, env)
    except OSError as exc:
        _stderr(f"cannot start {command[0]}: {exc.strerror or exc}")
        returncode = NOT_FOUND
    finally:
        renewer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _revoke(agent, leases, _stderr)
    return _exit_code(returncode)


def _run_forward(
    agent: AgentClient,
    command: list[str],
    secret_sets: list[str],
    ttl: int | None,
    proxy: str,
    dry_run: bool,
    json_out: bool,
) -> int:
    """CMD through the forward proxy: one multi-set credential, revoked when CMD exits."""
    from keyfob.sdk import KeyfobError

    try:
        targets = _targets(agent, secret_sets)
        if dry_run:
            env = forward_proxy_env(targets, MASKED, proxy, "<bundle>", agent.addr)
            _print_plan(env, command, json_out)
            return 0
        # One credential for CMD's whole run: its term is the shortest grant's cap.
        term = ttl or min(t.grant.max_lease_ttl for t in targets)
        credential = agent.mint_proxy_credential([t.secret_set for t in targets], ttl=term)
    except (CliError, KeyfobError) as exc:
        _fail(exc)
    workdir = Path(tempfile.mkdtemp(prefix="keyfob-run-"))
    try:
        bundle = workdir / "bundle.pem"
        bundle.write_text(merged_bundle(agent.ca_certificate()))
        env = {k: v for k, v in os.environ.items() if k not in WITHHELD}
        env.update(
            forward_proxy_env(targets, credential.token.reveal(), proxy, str(bundle), agent.addr)
        )
        try:
            returncode = supervise(command, env)
        except OSError as exc:
            _stderr(f"cannot start {command[0]}: {exc.strerror or exc}")
            returncode = NOT_FOUND
    except KeyfobError as exc:
        _fail(exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        # Revoked whatever happened: CMD's credential must not outlive it.
        _revoke(agent, {"the forward proxy": credential}, _stderr)
    return _exit_code(returncode)


def _print_plan(env: Mapping[str, str], command: list[str], json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps({"env": dict(env), "command": command}, indent=2))
        return
    for name, value in env.items():
        typer.echo(f"{name}={value}")


def _fail(problem: object) -> NoReturn:
    from keyfob.sdk import AuthenticationFailed, KeyfobError

    message = problem.message if isinstance(problem, CliError) else str(problem)
    if isinstance(problem, KeyfobError) and problem.reason is None:
        # The problem type's last part names the cause for scripts: "(unauthorized)".
        message += f" ({problem.type.rsplit(':', 1)[-1]})"
    if isinstance(problem, AuthenticationFailed):
        message += "; check KEYFOB_TOKEN or --token-file"
    _stderr(f"error: {' '.join(message.split())}")
    raise typer.Exit(KEYFOB_ERROR)
