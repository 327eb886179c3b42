"""The command line: one verb per workflow step, each a few lines over the library.

Errors are one line on stderr and exit code 2 (``--debug`` shows the traceback); warnings are
lines on stderr starting with ``warning:``; long work shows a progress bar on a terminal only.
"""

from __future__ import annotations

import sys
import traceback
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import click

from netpol_learn._errors import NetpolLearnError
from netpol_learn._gc import inputs_kept
from netpol_learn._output import write_text
from netpol_learn._text import counted
from netpol_learn._flowlog import FlowLog, merge_logs, read_flow_log, write_flow_log
from netpol_learn._inventory import DEFAULT_PAGE_SIZE
from netpol_learn._manifests import DEFAULT_IMAGE, DEFAULT_NAMESPACE, DEFAULT_STORE_SIZE, SNIFFER_SELECTOR
from netpol_learn._sniff import DEFAULT_DRAIN, DEFAULT_INTERVAL, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROC, DEFAULT_SPOOL, DEFAULT_SPOOL_SIZE


class _Group(click.Group):
    """Turns the library's errors and click's usage errors into one line and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"error: {where}{' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NetpolLearnError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netpol-learn")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Learn Kubernetes NetworkPolicies from observed traffic.

    \b
    Example:
      netpol-learn capture node-a.pcap node-b.pcapng.gz -o flows.jsonl
    """
    ctx.obj = {"debug": debug}


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@contextmanager
def _progress(paths: list[Path]):
    """A progress bar over the bytes of the input files, on a terminal only."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from rich.console import Console

    sizes = {p: max(p.stat().st_size, 1) if p.exists() else 1 for p in paths}
    finished = 0  # bytes of the files read to the end (a path given twice is read twice)
    current: list = [None, 0]  # the file being read and how far
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        transient=True, console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("reading captures", total=sum(sizes[p] for p in paths))

        def report(path: Path, position: int) -> None:
            nonlocal finished
            # capture_files reports with the Path objects of ``paths``: click makes one per
            # argument, so identity tells a path given twice apart from itself.
            if current[0] is not None and path is not current[0]:
                finished += sizes.get(current[0], 0)  # the previous file is done
            current[:] = [path, min(position, sizes.get(path, position))]
            bar.update(task, completed=finished + current[1])

        yield report


class _Cidr(click.ParamType):
    """An address range (10.244.0.0/16, fd00::/48); a bare address is its /32 or /128."""

    name = "CIDR"

    def convert(self, value, param, ctx):
        from netpol_learn._inventory import parse_cidr

        try:
            return parse_cidr(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Duration(click.ParamType):
    """A duration: 30s, 15m, 24h, 7d, 1h30m (a bare number is seconds); the value is nanoseconds."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        from netpol_learn._time import parse_duration

        if isinstance(value, int):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _time_options(f):
    """How resolution treats time, for every command that resolves addresses."""
    from netpol_learn import DEFAULT_CLOCK_SKEW
    from netpol_learn._time import format_duration

    return _options(
        click.option("--clock-skew", type=_Duration(), default=format_duration(DEFAULT_CLOCK_SKEW), show_default=True,
                     help="How far the capture's clock may be off the API's: traffic this close to an address changing hands is ambiguous, never attributed."),
        click.option("--no-inference", "inference", is_flag=True, flag_value=False, default=True,
                     help="Do not attribute traffic to a pod only because two snapshots bracket it (report it as unresolved instead)."),
    )(f)


def _resolve_options_of(kw: dict):
    from netpol_learn import ResolveOptions

    return ResolveOptions(clock_skew=kw["clock_skew"], inference=kw["inference"])


def _address_options(f):
    """The cluster's address ranges, for every command that resolves addresses."""
    return _options(
        click.option("--pod-cidr", multiple=True, type=_Cidr(), help="A pod address range, beside the nodes' podCIDRs; repeatable."),
        click.option("--service-cidr", multiple=True, type=_Cidr(), help="The Service address range (else read from the API server's flags in the snapshot); repeatable."),
    )(f)


def _options(*decorators):
    """Apply click option decorators in the order --help shows them."""
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


_FILE = click.Path(dir_okay=False, path_type=Path)


#: What --help adds where --inventory may be left out.
_WITHOUT_INVENTORY = (" Optional for flow logs with identities (Hubble's): without it, the pods, namespaces, nodes and"
                      " workloads are inferred from the flow records (docs/resolution.md).")


def _inventory_option(help: str = "Inventory snapshot(s): kubectl get ... -o yaml/json, or netpol-learn inventory; repeatable.",
                      required: bool = False):
    """--inventory; unless ``required``, a flow log's identities stand in for it (``_load_inventory``)."""
    return click.option("--inventory", "inventories", multiple=True, required=required, type=_FILE,
                        help=help if required else help + _WITHOUT_INVENTORY)


def _flows_option(help: str = "Flow log(s) from capture, merge or collect; repeatable.", required: bool = True):
    return click.option("--flows", "flow_logs", multiple=True, required=required, type=_FILE, help=help)


class _Size(click.ParamType):
    """A size in bytes as a Kubernetes quantity: 1048576, 512Ki, 64Mi, 1Gi, 10M, 1G."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from netpol_learn._manifests import quantity_value

        if isinstance(value, int):
            return value
        try:
            size = quantity_value(str(value).strip())
        except ValueError:
            size = None
        if size is None or size <= 0 or size != size.to_integral_value():
            self.fail(f"{value!r}: expected a size such as 1048576, 512Ki, 64Mi or 1Gi", param, ctx)
        return int(size)


def _output_option(help: str):
    """-o/--output: a file, '-' (the default) for stdout."""
    return click.option("-o", "--output", default="-", show_default=True, help=help)


def _format_option(*choices: str, help: str | None = None):
    return click.option("--format", "fmt", type=click.Choice(choices), default=choices[0], show_default=True, help=help)


def _input_options(f):
    """The options of capture and learn that say how to read their inputs."""
    f = click.option("--include-dropped", is_flag=True,
                     help="Hubble: count DROPPED records as traffic to allow (by default they are reported as dropped, never a rule).")(f)
    from netpol_learn._capture import INPUT_FORMATS

    return click.option("--format", "input_format", type=click.Choice(INPUT_FORMATS), default="auto", show_default=True,
                        help="What the inputs are: told by their content (auto), pcap/pcapng, or Hubble flow records (hubble observe -o json/jsonpb, the exporter's files).")(f)


class _Terminated(Exception):
    """SIGTERM or SIGINT while standard input was being read."""


class _Stdin:
    """Standard input for ``read_stream``: its lines until it ends or SIGTERM (or SIGINT) comes,
    so that ``hubble observe --follow | netpol-learn capture -`` writes what it read when stopped."""

    def __init__(self):
        self.stream = sys.stdin.buffer
        self.stop = False
        self.reading = False

    def peek(self, n: int) -> bytes:
        return self.stream.peek(n)

    def read(self, n: int = -1) -> bytes:
        return self.stream.read(n)

    def stopped(self, signum, frame) -> None:
        self.stop = True
        if self.reading:  # blocked in readline: end the input there
            raise _Terminated

    def __iter__(self):
        while not self.stop:
            self.reading = True
            try:
                line = self.stream.readline()
            except _Terminated:
                return
            finally:
                self.reading = False
            if not line:
                return
            yield line



def _capture_inputs(paths: list[Path], dedup_window: float, input_format: str, include_dropped: bool) -> FlowLog:
    """capture_files of the inputs given, '-' being standard input (until it ends or SIGTERM)."""
    from netpol_learn import capture_files
    from netpol_learn._signals import on_stop

    stdin = _Stdin()
    with _progress([p for p in paths if str(p) != "-"]) as report, on_stop(stdin.stopped):
        return capture_files(paths, dedup_window=dedup_window, warn=_warn, progress=report, input_format=input_format,
                             include_dropped=include_dropped, stdin=stdin)


def _dedup_option(help: str = "Seconds within which the same packet seen again (another interface, a tunnel, after NAT) counts once."):
    from netpol_learn import DEFAULT_DEDUP_WINDOW

    return click.option("--dedup-window", type=click.FloatRange(min=0), default=DEFAULT_DEDUP_WINDOW, show_default=True, help=help)


_kube_options = _options(
    click.option("--kubeconfig", type=_FILE, help="Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, else the pod's service account]."),
    click.option("--context", help="Kubeconfig context to use [default: its current-context]."),
)


def _namespace_option(default: str, help: str):
    return click.option("-n", "--namespace", default=default, show_default=True, help=help)


def _shown(output: str) -> str:
    return output if output != "-" else "stdout"


@contextmanager
def _beside(calls, paths):
    """The ``Pending`` of each ``(fn, args)`` of ``calls``, made in turn in a second process when
    that pays (``netpol_learn._parallel``), stopped when the block ends; made here, when asked
    for, with --debug, so that an error's traceback is whole. Within the block, the inputs read
    are kept out of the collector's sight until the command is over (``inputs_kept``)."""
    from netpol_learn._parallel import beside

    ctx = click.get_current_context()
    pending = beside(calls, paths=paths, background=not (ctx.find_root().obj or {}).get("debug"))
    try:
        with inputs_kept(ctx.call_on_close):
            yield pending
    finally:
        if pending:
            pending[0].cancel()  # (one process for all of them)


def _read_flows(flow_logs) -> FlowLog:
    """The flow logs given, merged (one log is merged already: read_flow_log merges its segments)."""
    logs = [read_flow_log(p) for p in flow_logs]
    return logs[0] if len(logs) == 1 else merge_logs(logs)


def _write_json(output: str, value) -> None:
    import json

    write_text(output, json.dumps(value, indent=2, sort_keys=True) + "\n")


#: Why a command without --inventory cannot go on.
NO_IDENTITIES = ("no --inventory given, and the flow log holds no identities to build one from "
                 "(only flow records such as Hubble's carry them)")


def _load_inventory(inventories, pod_cidr=(), service_cidr=(), log: FlowLog | None = None):
    """The inventory of --inventory; without it, the one the flow log's identities describe
    (its endpoint lines), with the --pod-cidr and --service-cidr given."""
    from netpol_learn import load_inventory

    if inventories or log is None:
        return load_inventory(inventories, pod_cidrs=pod_cidr, service_cidrs=service_cidr, warn=_warn)
    from netpol_learn._errors import InventoryError
    from netpol_learn._inventory import inventory_from_endpoints

    if not log.endpoints:
        raise InventoryError(NO_IDENTITIES)
    return inventory_from_endpoints(log.endpoints, pod_cidr, service_cidr)


def _summary(log: FlowLog, out: str) -> str:
    s = log.stats
    tunnels = sum(t.get("packets", 0) for t in s.get("tunnels", {}).values())
    if "flow_records" in s:  # Hubble's records: no packets, no copies
        parts = [f"{s['flow_records']} flow records", f"{s.get('packets', 0)} counted"]
    else:
        parts = [f"{s.get('packets', 0)} packets", f"{s.get('duplicates', 0)} duplicates"]
    if tunnels:
        parts.append(f"{tunnels} tunnelled")
    return f"{', '.join(parts)} -> {len(log.flows)} flows, {len(log.dns)} DNS names -> {out}"


@main.command()
@click.argument("pcaps", nargs=-1, required=True, type=_FILE)
@_output_option("Flow log to write (JSON Lines); '-' is stdout.")
@_dedup_option()
@_input_options
def capture(pcaps: tuple[Path, ...], output: str, dedup_window: float, input_format: str, include_dropped: bool) -> None:
    """Turn pcap/pcapng files (plain or gzip), or Hubble's flow records, into a flow log.

    Reads Ethernet (with VLAN tags), Linux cooked v1/v2 (tcpdump -i any), raw IP and loopback
    captures; IPv4 and IPv6; TCP, UDP, SCTP, ICMP; VXLAN, Geneve, IP-in-IP, GRE and flannel
    tunnels (flows come from the inner packets). A damaged file yields what could be read, with
    a warning naming the byte offset. Hubble's JSON (hubble observe -o json or -o jsonpb, the
    exporter's files) brings the identities Cilium gave both ends, so an inventory is optional
    later. '-' reads standard input until it ends or SIGTERM, then writes the log. The format is
    described in docs/flow-log.md.

    \b
    Example:
      tcpdump -i any -w node.pcap          # on a node, for a while
      netpol-learn capture node.pcap -o flows.jsonl
      hubble observe --follow -o json | netpol-learn capture - -o flows.jsonl
    """
    log = _capture_inputs(list(pcaps), dedup_window, input_format, include_dropped)
    write_flow_log(log, output)
    click.echo(_summary(log, _shown(output)), err=True)


@main.command()
@click.argument("flow_logs", nargs=-1, required=True, type=_FILE)
@_output_option("Merged flow log to write; '-' is stdout.")
def merge(flow_logs: tuple[Path, ...], output: str) -> None:
    """Merge flow logs (several nodes, several days) into one.

    Counts add up, first/last seen widen; the result does not depend on the order of the inputs.

    \b
    Example:
      netpol-learn merge node-a.jsonl node-b.jsonl -o cluster.jsonl
    """
    from netpol_learn._merge import Merged, merge_files

    merged = merge_files(list(flow_logs), output)
    if merged is None:  # files only the reference reader reads (escaped strings, say): merged by it
        log = _read_flows(flow_logs)
        write_flow_log(log, output)
        merged = Merged(len(log.flows), len(log.dns))
    click.echo(f"{len(flow_logs)} logs -> {merged.flows} flows, {merged.dns} DNS names -> {_shown(output)}", err=True)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def _listing_progress():
    """A spinner naming the resource being listed and the objects so far, on a terminal only."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status("connecting") as status:
        yield lambda resource, count: status.update(f"listing {resource}: {count}")


@main.command()
@_kube_options
@click.option("--page-size", type=click.IntRange(min=1), default=DEFAULT_PAGE_SIZE, show_default=True, help="Objects per list request (continue tokens fetch the rest).")
@click.option("--watch", is_flag=True, help="After listing, watch every kind and record each change with its time (the file's history), until SIGTERM, SIGINT or --for.")
@click.option("--for", "duration", type=_Duration(), default=None, help="With --watch: stop after this long, e.g. 30s, 15m, 24h, 7d [default: until SIGTERM or SIGINT].")
@click.option("--write-every", type=_Duration(), default=None, help="With --watch: write the file this often, e.g. 30s, 5m (a kill loses at most this much) [default: 60s].")
@_output_option("Inventory to write (a YAML List, JSON when named *.json); '-' is stdout.")
def inventory(kubeconfig: Path | None, context: str | None, page_size: int, watch: bool, duration: int | None,
              write_every: int | None, output: str) -> None:
    """Snapshot the cluster's namespaces, nodes, pods, services and workloads from its API.

    Lists cluster-wide, read-only, the namespaces, nodes, pods, services, endpointslices,
    endpoints, replicasets, deployments, statefulsets, daemonsets, jobs and cronjobs, and writes
    them as `kubectl get <those> -A -o yaml` does (a YAML List), annotated with the time the
    listing started. Kinds the server does not serve are skipped with a warning; the credentials
    need list permission on all the others.

    With --watch it then watches every kind and adds each change, with the time it was seen, to
    the file's history (docs/resolution.md, "Watch history"), so that each address resolves to
    the pod that held it when the traffic happened. The file is replaced whole every
    --write-every and once more at the end; watches that drop or fail resume by themselves.
    The credentials then also need watch permission.

    \b
    Example:
      netpol-learn inventory -o inventory.yaml
      netpol-learn inventory --kubeconfig ~/.kube/prod --context admin@prod -o prod.yaml
      netpol-learn inventory --watch --for 24h -o history.json
    """
    if not watch:
        if duration is not None or write_every is not None:
            raise click.UsageError("--for and --write-every need --watch", ctx=click.get_current_context())
        from netpol_learn import fetch_inventory, write_inventory

        started = _now()  # pods listed held their addresses at least until then
        with _listing_progress() as report:
            items = fetch_inventory(kubeconfig, context, page_size, warn=_warn, progress=report)
        write_inventory(items, output, started)
        counts = Counter(item["kind"] for item in items)  # items come sorted by kind
        per_kind = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        click.echo(f"{len(items)} objects ({per_kind}) -> {_shown(output)}", err=True)
        return
    _watch_inventory(kubeconfig, context, page_size, duration, write_every, output)


def _watch_inventory(kubeconfig, context, page_size: int, duration: int | None, write_every: int | None, output: str) -> None:
    """inventory --watch: until SIGTERM or SIGINT (which only set the stop event) or --for."""
    import signal
    import threading

    ctx = click.get_current_context()
    if output == "-":
        raise click.UsageError("--watch writes its file again and again: give -o FILE", ctx=ctx)
    for name, value in (("--for", duration), ("--write-every", write_every)):
        if value is not None and value < 10**9:
            raise click.BadParameter("must be at least 1s", ctx=ctx, param_hint=f"'{name}'")
    from netpol_learn import watch_inventory
    from netpol_learn._inventory import DEFAULT_WRITE_EVERY, summary_line

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        watched = watch_inventory(output, kubeconfig, context, page_size, duration=None if duration is None else duration / 1e9,
                                  write_every=DEFAULT_WRITE_EVERY if write_every is None else write_every / 1e9,
                                  stop=stop, warn=_warn, info=lambda line: click.echo(line, err=True))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    click.echo(summary_line(watched, output), err=True)


@main.command()
@_flows_option()
@_inventory_option()
@_address_options
@_time_options
@_format_option("text", "json", help="text: the report; json: resolved connections and the report.")
@_output_option("Where to write it; '-' is stdout.")
def resolve(flow_logs, inventories, pod_cidr, service_cidr, fmt: str, output: str, **kw) -> None:
    """Map the addresses of flow logs to pods, workloads, Services, nodes and outside hosts.

    Prints what every flow's client and server resolved to, by kind of peer, and what needs a
    person's attention: addresses in the cluster's ranges that no pod held at that time,
    ambiguous ones, workloads that no selector picks alone. The rules are in docs/resolution.md.

    \b
    Example:
      netpol-learn resolve --flows flows.jsonl --inventory inventory.yaml
      netpol-learn resolve --flows a.jsonl --flows b.jsonl --inventory snap.yaml --format json -o resolved.json
    """
    from netpol_learn import report_text, resolution_to_json
    from netpol_learn import resolve as resolve_flows

    log = _read_flows(flow_logs)
    res = resolve_flows(log, _load_inventory(inventories, pod_cidr, service_cidr, log), _resolve_options_of(kw))
    if res.report.clock_warning:
        _warn(res.report.clock_warning)
    if fmt == "json":
        _write_json(output, resolution_to_json(res))
    else:
        write_text(output, report_text(res))
    if output != "-":
        click.echo(f"{counted(len(log.flows), 'flow')} -> {counted(len(res.connections), 'connection')} -> {output}", err=True)


@main.command()
@_flows_option()
@_inventory_option()
@_address_options
@_time_options
@click.option("--stable-after", type=_Duration(), default="24h", show_default=True,
              help="A workload is stable when no new edge appeared for this long before the capture ended (30s, 15m, 24h, 7d); stabilizing after half of it.")
@_format_option("text", "markdown", "json", help="text: for a terminal; markdown: for a pull request or a wiki; json: for a script.")
@_output_option("Where to write it; '-' is stdout.")
@click.option("--chart", type=_FILE, default=None, help="Also draw the new edges over time into this PNG file.")
def status(flow_logs, inventories, pod_cidr, service_cidr, stable_after: int, fmt: str, output: str, chart: Path | None, **kw) -> None:
    """Is learning done? Per workload: its traffic, its edges and when the last new one appeared.

    An edge is one rule's worth of traffic (a peer, a direction, a protocol and a port). A
    workload is stable when no new edge appeared for --stable-after before the capture ended,
    stabilizing after half of that, else learning; the cluster is as settled as its least settled
    workload. Also lists workloads never seen in traffic, partial ones (only connections open
    before the capture), attempts that are no need, inferred attributions and outside names whose
    addresses changed. Exit 0. See docs/learning.md.

    \b
    Example:
      netpol-learn status --flows flows.jsonl --inventory inventory.yaml
      netpol-learn status --flows day-*.jsonl --inventory inventory.yaml --stable-after 3d --chart learning.png
    """
    import shutil

    from netpol_learn import learning_chart, learning_status, status_markdown, status_text, status_to_json
    from netpol_learn import resolve as resolve_flows
    from netpol_learn._output import write_data

    if stable_after <= 0:
        raise click.BadParameter("must be longer than 0 seconds", param_hint="'--stable-after'")
    log = _read_flows(flow_logs)
    inv = _load_inventory(inventories, pod_cidr, service_cidr, log)
    res = resolve_flows(log, inv, _resolve_options_of(kw))
    if res.report.clock_warning:
        _warn(res.report.clock_warning)
    result = learning_status(log, inv, res, stable_after)
    if fmt == "json":
        _write_json(output, status_to_json(result))
    elif fmt == "markdown":
        write_text(output, status_markdown(result))
    elif output == "-" and sys.stdout.isatty():
        write_text(output, status_text(result, width=shutil.get_terminal_size().columns, color=True))
    else:
        write_text(output, status_text(result))
    if chart is not None:
        write_data(chart, learning_chart(result))
    if output != "-" or chart is not None:
        written = ", ".join(_shown(p) for p in ([output] if output != "-" else []) + ([str(chart)] if chart is not None else []))
        click.echo(f"learning status: {result.verdict} ({counted(len(result.workloads), 'workload')}, "
                   f"{counted(result.edges, 'edge')}) -> {written}", err=True)


def _generate_options(f):
    """The options generate and learn share, in the order --help shows them; their defaults are
    GenerateOptions' own."""
    from netpol_learn._synthesize import DENIES, DNS_MODES, FLAVORS, GenerateOptions

    default = GenerateOptions()
    options = [
        _inventory_option(),
        click.option("-o", "--output", "output", required=True, type=click.Path(), help="Directory for the policies: one file per namespace, kustomization.yaml, REPORT.md."),
        click.option("--default-deny", type=click.Choice(list(DENIES)), default=default.default_deny, show_default=True, help="A default-deny policy in each namespace that gets policies."),
        click.option("--dns", type=click.Choice(DNS_MODES), default=default.dns, show_default=True, help="DNS to the cluster resolver: one allow-dns policy per namespace, or a rule in each workload's policy."),
        click.option("--named-ports", is_flag=True, help="Name ports as the pods declare them (e.g. http) instead of numbers."),
        click.option("--aggregate-prefix", type=click.IntRange(1, 32), default=None, help="Collapse outside IPv4 addresses of a rule into prefixes of this length (e.g. 24) ..."),
        click.option("--aggregate-prefix-v6", type=click.IntRange(1, 128), default=None, help="... and outside IPv6 addresses into prefixes of this length (e.g. 64) ..."),
        click.option("--aggregate-threshold", type=click.IntRange(min=2), default=default.aggregate_threshold, show_default=True, help="... when at least this many of them share one."),
        click.option("--open-ingress-above", type=click.IntRange(min=1), default=None, help="Allow any outside address to a port that more than this many outside addresses reached (the cluster's ranges excepted). Off by default; REPORT.md says where it would apply."),
        click.option("--include-namespace", "include_namespaces", multiple=True, help="Also write policies for this namespace (kube-system is left alone by default)."),
        click.option("--name-prefix", default="", help="Prefix for the name of every generated policy (e.g. learned-), so they cannot clash with policies already in the cluster."),
        click.option("--flavor", type=click.Choice(FLAVORS), default=default.flavor, show_default=True, help="networkpolicy: Kubernetes NetworkPolicies; cilium: CiliumNetworkPolicies (cilium.io/v2), outside names as toFQDNs through Cilium's DNS proxy."),
        click.option("--fqdn-pattern-above", type=click.IntRange(min=1), default=default.fqdn_pattern_above, show_default=True, help="With --flavor cilium: more names than this one level under one parent domain become one matchPattern (*.parent)."),
        click.option("--cluster-baseline", is_flag=True, help="Also write a ClusterNetworkPolicy (tier Baseline, alpha) that denies, in the directions --default-deny isolates, what no NetworkPolicy decides, in every namespace but the excluded ones: namespaces created later start default-deny too."),
        click.option("--baseline-exclude", multiple=True, default=default.baseline_exclude, show_default=True, help="Namespace the cluster baseline leaves alone; repeatable (replaces the default)."),
        _address_options,
        _time_options,
        click.option("--templates", "template_dir", type=click.Path(file_okay=False, exists=False, path_type=Path), default=None, help="Directory of Jinja templates that replace the built-in ones by name."),
        click.option("--force", is_flag=True, help="Write into a directory that holds files netpol-learn did not write (they are left alone)."),
    ]
    return _options(*options)(f)


def _generate_options_of(kw: dict):
    """GenerateOptions from the command's options: each is the field of the same name."""
    from dataclasses import fields

    from netpol_learn import GenerateOptions

    return GenerateOptions(**{f.name: kw[f.name] for f in fields(GenerateOptions)})


def _write_policies(log: FlowLog, kw: dict) -> None:
    from netpol_learn import generate, write_directory

    try:
        options = _generate_options_of(kw)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx=click.get_current_context()) from exc
    inv = _load_inventory(kw["inventories"], kw["pod_cidr"], kw["service_cidr"], log)
    out = kw["output"]
    generated = generate(log, inv, options, kw["template_dir"], _resolve_options_of(kw))
    if generated.resolution.report.clock_warning:
        _warn(generated.resolution.report.clock_warning)
    stale = write_directory(out, generated.directory, force=kw["force"], warn=_warn)
    policies = generated.policies
    workload_policies = len(policies.workload_policies)
    namespaces = len({p.namespace for p in policies.policies})
    parts = [f"{counted(len(log.flows), 'flow')} -> {counted(workload_policies, 'workload policy', 'workload policies')} in {counted(namespaces, 'namespace')} -> {out}"]
    if policies.skipped:
        parts.append(f"{len(policies.skipped)} left out (see REPORT.md)")
    if stale:
        parts.append(f"removed {counted(len(stale), 'file')} of an earlier run")
    click.echo("; ".join(parts), err=True)


@main.command()
@_flows_option()
@_generate_options
def generate(flow_logs, **kw) -> None:
    """Write the NetworkPolicies that allow exactly the observed traffic.

    One policy per workload that sent or received traffic (its ingress and egress rules,
    selecting the workload's pods as its owner does), DNS to the cluster resolver, ipBlock rules
    for addresses outside the cluster (with their DNS names as comments), and a default-deny per
    namespace, so that applying the directory (kubectl apply -k DIR) moves those namespaces to
    default-deny without breaking what was observed. What could not become a rule is listed in
    DIR/REPORT.md. The same inputs give byte-identical files.

    \b
    Example:
      netpol-learn generate --flows flows.jsonl --inventory inventory.yaml -o policies/
      kubectl apply -k policies/
    """
    _write_policies(_read_flows(flow_logs), kw)


@main.command()
@click.argument("pcaps", nargs=-1, required=True, type=_FILE)
@_dedup_option()
@_input_options
@_generate_options
def learn(pcaps, dedup_window: float, input_format: str, include_dropped: bool, **kw) -> None:
    """Capture and generate in one step: pcap/pcapng files (or Hubble's flow records) to a policy directory.

    \b
    Example:
      netpol-learn learn node-a.pcap node-b.pcap --inventory inventory.yaml -o policies/
    """
    log = _capture_inputs(list(pcaps), dedup_window, input_format, include_dropped)
    _write_policies(log, kw)


@main.command()
@click.option("-i", "--interface", "interfaces", multiple=True, help="Interface to capture on, a glob pattern (quoted), or any; repeatable [default: the pod-facing ones: veth*, cali*, lxc*, cni0, flannel*, vxlan*, genev*].")
@click.option("--interval", type=click.FloatRange(min=0.1), default=DEFAULT_INTERVAL, show_default=True, help="Seconds between flow-log segments.")
@click.option("--max-connections", type=click.IntRange(min=1), default=DEFAULT_MAX_CONNECTIONS, show_default=True, help="Distinct connections kept per interval (about 4 KB of memory each at the peak); packets of more are dropped and counted (dropped_connections).")
@_output_option("Flow log to append segments to (fsync'd, whole segments only); '-' is stdout [default with --server: none].")
@click.option("--server", metavar="URL", default=None, help="Send each segment to the learning service (netpol-learn serve) at this URL, e.g. http://netpol-learn.netpol-learn.svc:8080, through an on-disk spool, in order, retried with backoff.")
@click.option("--token-file", metavar="FILE", default=None, help="Token to send to --server, read again for every attempt [default: the pod's service account token].")
@click.option("--ca-file", metavar="FILE", default=None, help="CA bundle that an https:// --server's certificate is checked against [default: the system's].")
@click.option("--spool", metavar="DIR", default=DEFAULT_SPOOL, show_default=True, help="Directory of the segments not sent yet (created; an earlier run's are sent first).")
@click.option("--spool-size", type=_Size(), default=DEFAULT_SPOOL_SIZE, show_default=True, help="Bytes the spool may hold; when full, the oldest segments are dropped and counted in the next one (spool_dropped_segments).")
@click.option("--drain", metavar="SECONDS", type=click.FloatRange(min=0), default=DEFAULT_DRAIN, show_default=True, help="Seconds given at stop to send the segments left; the rest stays in the spool for the next start.")
@click.option("--node", default=None, help="Name of this node in the segments' sources and ids [default: $NODE_NAME, else the host name].")
@click.option("--pods/--no-pods", "watch_pods", default=None, help="Name the pods of each flow from a watch of the API [default: when in a cluster and without --server].")
@click.option("--buffer-size", type=click.IntRange(min=64, max=1 << 20), default=None, help="Kernel ring per interface, in KiB [default: 1024 on a pod's interface, 8192 else].")
@click.option("--proc", "proc", metavar="PATH", default=DEFAULT_PROC, show_default=True, help="Proc file system of the node's processes, whose TCP socket tables are read at the start and every interval for connections opened before the start (the DaemonSet mounts the host's at /host/proc); '' for no scan.")
@_dedup_option()
def sniff(interfaces, interval: float, max_connections: int, output: str, server: str | None, token_file: str | None, ca_file: str | None, spool: str,
          spool_size: int, drain: float, node: str | None, watch_pods: bool | None, buffer_size: int | None, proc: str,
          dedup_window: float) -> None:
    """Capture live on this node's interfaces and write a flow-log segment every interval.

    Needs CAP_NET_RAW (root, or the DaemonSet of `netpol-learn manifests`), in the node's network
    namespace. The kernel keeps only TCP handshakes (and FIN/RST), DNS, UDP, SCTP INIT and
    tunnels; the rest of the pipeline is capture's. Interfaces that appear later and match are
    picked up; one that vanishes (a pod deleted) is a warning and capture goes on. SIGTERM or
    SIGINT writes the last segment and exits 0. In a cluster, flows name the pods that held their
    addresses (src_pods, dst_pods). TCP connections that were open before the start are found
    in the socket tables under --proc (evidence socket-scan). With --server, the segments go to
    the learning service (and to -o only when it is given). See docs/sniffer.md.

    \b
    Example:
      netpol-learn sniff --interval 30 -o /var/log/flows.jsonl
      netpol-learn sniff --server http://netpol-learn.netpol-learn.svc:8080 --spool /tmp/spool
      netpol-learn sniff -i cni0 -i 'veth*' --max-connections 50000 | tee flows.jsonl
      netpol-learn sniff --proc /host/proc --interval 30
    """
    import os
    import socket

    from netpol_learn._sniff import Options, sniff as run_sniffer

    def info(message: str) -> None:
        click.echo(f"sniff: {message}", err=True)

    local = output if server is None or click.get_current_context().get_parameter_source("output") != click.core.ParameterSource.DEFAULT else None
    where = " and ".join(([f"{server} (spool {spool})"] if server else []) + ([_shown(local)] if local else []))

    def started(sniffer) -> None:
        names = sorted(sniffer.rings)
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        info(f"listening on {counted(len(names), 'interface')}{f' ({shown})' if names else ''}; "
             f"a segment every {interval:g}s to {where}{f'; socket tables from {proc}' if proc else ''}")

    node = node or os.environ.get("NODE_NAME") or socket.gethostname()
    options = Options(
        interfaces=tuple(interfaces), interval=interval, max_connections=max_connections, output=local,
        source=f"sniff:{node}", dedup_window=dedup_window, buffer_size=buffer_size, proc=proc,
        server=server, token_file=token_file, ca_file=ca_file, spool=spool, spool_size=spool_size, node=node, drain=drain,
    )
    sniffer = run_sniffer(options, watch_pods=watch_pods, warn=_warn, info=info, started=started)
    sent = ""
    if sniffer.sender is not None:
        s = sniffer.sender
        sent = (f"; {counted(s.sent, 'segment')} sent ({s.duplicates} already there), {s.rejected} refused, "
                f"{sniffer.spool.dropped['segments']} dropped from the full spool, {len(sniffer.spool)} left in the spool")
    info(f"stopped: {counted(sniffer.segments, 'segment')}, {sniffer.totals['packets']} packets, "
         f"{sniffer.totals['flows']} flow lines -> {where}{sent}")


@main.command()
@click.option("--policies", "policy_paths", multiple=True, required=True, type=click.Path(path_type=Path), help="Policy directory or file(s): YAML or JSON, Lists, kubectl kustomize output; repeatable.")
@_inventory_option("Inventory snapshot(s); repeatable.")
@_flows_option("Flow log(s) of the traffic that must keep working; repeatable.")
@_address_options
@_time_options
@_format_option("text", "json")
@_output_option("Where to write the result; '-' is stdout.")
def verify(policy_paths, inventories, flow_logs, pod_cidr, service_cidr, fmt: str, output: str, **kw) -> None:
    """Which observed connections would a policy set deny? Exit 1 if any.

    The migration check: run it on a generated directory, or on existing policies plus a
    planned default-deny, before applying them. Each denied connection names the direction that
    denies it and the policies that isolate the pod.

    \b
    Example:
      netpol-learn verify --policies policies/ --inventory inventory.yaml --flows flows.jsonl
    """
    from netpol_learn import verify_json, verify_text
    from netpol_learn import verify as verify_flows
    from netpol_learn._inventory import load_inventory_noted
    from netpol_learn._semantics import load_policies_noted

    # The policies, then the inventory, are read in a second process while this one reads the
    # flow logs (netpol_learn/_parallel.py; one more process, not two: on two cores a third would
    # slow this one's reading down as much as it saves). Errors and warnings come out as they
    # would reading in turn: the policies', the flow logs', the inventory's.
    calls = [(load_policies_noted, (list(policy_paths),))]
    if inventories:
        calls.append((load_inventory_noted, (list(inventories), pod_cidr, service_cidr)))
    with _beside(calls, [*policy_paths, *inventories]) as (policies_read, *inventory_read):
        try:
            log = _read_flows(flow_logs)
        except NetpolLearnError:
            for note in policies_read.result()[1]:  # the policies' error, if any, is met first in turn
                _warn(note)
            raise
        policies, notes = policies_read.result()
        for note in notes:
            _warn(note)
        if inventory_read:
            inv, warnings, error = inventory_read[0].result()
            for warning in warnings:
                _warn(warning)
            if error is not None:
                raise error
        else:
            inv = _load_inventory(inventories, pod_cidr, service_cidr, log)
    result = verify_flows(log, inv, policies, _resolve_options_of(kw))
    if fmt == "json":
        _write_json(output, verify_json(result))
    else:
        write_text(output, verify_text(result))
    click.get_current_context().exit(1 if result.denied else 0)


@main.command()
@click.argument("base", type=click.Path(exists=False, path_type=Path))
@click.argument("new", type=click.Path(exists=False, path_type=Path))
@_inventory_option("Inventory snapshot(s): the pods and namespaces to compare connectivity between; repeatable.", required=True)
@_flows_option("Flow log(s): mark the differences that touch observed traffic; repeatable.", required=False)
@_address_options
@_time_options
@_format_option("text", "markdown", "json", help="markdown: for a pull-request comment or $GITHUB_STEP_SUMMARY.")
@_output_option("Where to write the result; '-' is stdout.")
def diff(base: Path, new: Path, inventories, flow_logs, pod_cidr, service_cidr, fmt: str, output: str, **kw) -> None:
    """Compare two policy sets by meaning: which connections NEW allows or denies that BASE did not.

    Compares connectivity between every pair of workloads of the inventory, on every port the
    policies or the pods name, and to and from the address ranges the policies name. Exit 0
    when equal, 1 when they differ, 2 on error.

    \b
    Example:
      netpol-learn diff policies/ new-policies/ --inventory inventory.yaml --format markdown >> "$GITHUB_STEP_SUMMARY"
    """
    from netpol_learn import diff_json, diff_text
    from netpol_learn import diff as diff_policies
    from netpol_learn._semantics import load_policies_noted

    # BASE is read in a second process while this one reads the rest (netpol_learn/_parallel.py);
    # errors come out as they would reading in turn: the inventory's, the flow logs', BASE's, NEW's.
    with _beside([(load_policies_noted, ([base],))], [base]) as (base_read,):
        inv = _load_inventory(inventories, pod_cidr, service_cidr)
        log = _read_flows(flow_logs) if flow_logs else None
        try:
            new_policies, new_notes = load_policies_noted([new])
        except NetpolLearnError:
            base_read.result()
            raise
        base_policies, notes = base_read.result()
    result = diff_policies(base_policies, new_policies, inv, log, _resolve_options_of(kw))
    for note in dict.fromkeys(notes + new_notes):
        _warn(note)
    if fmt == "json":
        _write_json(output, diff_json(result))
    else:
        write_text(output, diff_text(result, markdown=fmt == "markdown"))
    click.get_current_context().exit(0 if result.equal else 1)


#: What ``report --format`` is taken to be from the output file's name when not given.
_REPORT_SUFFIXES = {".svg": "svg", ".png": "png"}


def _report_options(f):
    """report's options; those of the generated policies have generate's names and defaults."""
    from netpol_learn._synthesize import DENIES, GenerateOptions

    default = GenerateOptions()
    return _options(
        _flows_option(),
        _inventory_option(),
        click.option("--policies", "policy_paths", multiple=True, type=click.Path(path_type=Path), help="Policy directory or file(s) to colour the map by, as verify judges them; repeatable [default: the policies generate would write from these flows]."),
        click.option("--base", "base_paths", multiple=True, type=click.Path(path_type=Path), help="With --policies: the policy set they replace; the map marks and lists what diff BASE POLICIES says (newly allowed, newly denied); repeatable."),
        click.option("--format", "fmt", type=click.Choice(["html", "svg", "png"]), default=None, help="html: the review page; svg or png: the map alone as a picture, for docs and pull requests [default: from -o's suffix, else html]."),
        click.option("-o", "--output", required=True, help="The file to write ('-' is stdout), e.g. report.html."),
        click.option("--title", default=None, help="The page's title [default: netpol-learn: its namespaces]."),
        click.option("--stable-after", type=_Duration(), default="24h", show_default=True, help="As status has it: a workload is stable when no new edge appeared for this long before the capture ended."),
        click.option("--default-deny", type=click.Choice(list(DENIES)), default=default.default_deny, show_default=True, help="Without --policies: the generated policies' default-deny, as generate takes it."),
        click.option("--aggregate-prefix", type=click.IntRange(1, 32), default=None, help="Without --policies: collapse outside IPv4 addresses into prefixes of this length, as generate does (the map shows the blocks) ..."),
        click.option("--aggregate-prefix-v6", type=click.IntRange(1, 128), default=None, help="... and outside IPv6 addresses into prefixes of this length ..."),
        click.option("--aggregate-threshold", type=click.IntRange(min=2), default=default.aggregate_threshold, show_default=True, help="... when at least this many of them share one."),
        click.option("--include-namespace", "include_namespaces", multiple=True, help="Without --policies: also generate policies for this namespace (kube-system is left alone by default)."),
        _address_options,
        _time_options,
    )(f)


@main.command()
@_report_options
def report(flow_logs, inventories, policy_paths, base_paths, fmt: str | None, output: str, title: str | None, stable_after: int,
           default_deny: str, aggregate_prefix, aggregate_prefix_v6, aggregate_threshold: int, include_namespaces, pod_cidr, service_cidr, **kw) -> None:
    """Write the review page: what was learned, as a map of who talks to whom.

    One self-contained HTML file that opens offline (file://, a CI artifact): namespaces as
    groups; workloads, outside endpoints by DNS name, the cluster DNS, nodes and the API server
    as nodes; an edge client -> server per protocol and port with its connections, coloured by
    what the policies do with it (with --policies: as verify judges it, with the denying
    direction; else the policies generate would write), and the traffic that could not become a
    rule. Click a workload for its policies and learning status, an edge for its evidence;
    filter, search, collapse namespaces (collapsed at first above 200 workloads). With --base,
    the changes diff reports are marked and listed. --format svg or png writes the map alone as
    a picture. See docs/report.md.

    \b
    Example:
      netpol-learn report --flows flows.jsonl --inventory inventory.yaml -o report.html
      netpol-learn report --flows flows.jsonl --inventory inventory.yaml --policies new/ --base policies/ -o diff.html
      netpol-learn report --flows flows.jsonl --inventory inventory.yaml -o map.svg
    """
    from netpol_learn import GenerateOptions, build_report, map_png, map_svg, page_html
    from netpol_learn._output import write_data

    if stable_after <= 0:
        raise click.BadParameter("must be longer than 0 seconds", param_hint="'--stable-after'")
    if base_paths and not policy_paths:
        raise click.UsageError("--base needs --policies: the set to compare with the base", ctx=click.get_current_context())
    fmt = fmt or _REPORT_SUFFIXES.get(Path(output).suffix.lower(), "html")
    try:
        options = GenerateOptions(default_deny=default_deny, aggregate_prefix=aggregate_prefix, aggregate_prefix_v6=aggregate_prefix_v6,
                                  aggregate_threshold=aggregate_threshold, include_namespaces=tuple(include_namespaces))
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx=click.get_current_context()) from exc
    log = _read_flows(flow_logs)
    inv = _load_inventory(inventories, pod_cidr, service_cidr, log)
    model = build_report(log, inv, policy_paths=policy_paths, base_paths=base_paths, generate_options=options,
                         resolve_options=_resolve_options_of(kw), stable_after=stable_after, title=title, warn=_warn)
    if fmt == "html":
        write_text(output, page_html(model))
    elif fmt == "svg":
        write_text(output, map_svg(model))
    else:
        write_data(output, map_png(model))
    click.echo(f"{counted(len(model['nodes']), 'node')}, {counted(len(model['edges']), 'edge')} ({model['mode']}) -> {_shown(output)}", err=True)


@main.command()
@_namespace_option(DEFAULT_NAMESPACE, "Namespace for the sniffer and the learning service (the manifests create it).")
@click.option("--image", default=DEFAULT_IMAGE, show_default=True, help="Image with netpol-learn in it, built from the repository's Dockerfile.")
@click.option("--store-size", metavar="QUANTITY", default=DEFAULT_STORE_SIZE, show_default=True, help="Size of the learning service's store (its PersistentVolumeClaim, of the default storage class), a Kubernetes quantity such as 10Gi or 500G.")
@click.option("--node-cidr", "node_cidrs", multiple=True, type=_Cidr(), help="Address range that may reach the service's port besides the sniffer pods: the nodes' addresses as the network plugin sends them, and the API server's (readers come through its service proxy); repeatable [default: every address; NetworkPolicy cannot select host-network pods such as the sniffers'].")
@click.option("--templates", "template_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory whose sniffer.yaml.j2 and service.yaml.j2 replace the built-in templates (each on its own).")
@_output_option("File to write the manifests to; '-' is stdout.")
def manifests(namespace: str, image: str, store_size: str, node_cidrs: tuple[str, ...], template_dir: Path | None, output: str) -> None:
    """Print the Kubernetes manifests of the sniffer DaemonSet and the learning service.

    The sniffer: a Namespace, a ServiceAccount bound to no role, and a DaemonSet that runs
    `netpol-learn sniff --server` on every node, in the node's network, with no capability but
    NET_RAW and a read-only root filesystem; each pod posts a flow-log segment every 30 seconds to
    the service (spooling what it cannot send yet) and writes it to its log too (collect
    --from-logs). The service (`netpol-learn serve`): a ServiceAccount with a read-only ClusterRole
    plus TokenReview and SubjectAccessReview, a Role netpol-learn-reader for its readers (bound to
    nobody), NetworkPolicies that let only the sniffers (--node-cidr) and the API server reach it,
    a PersistentVolumeClaim (--store-size), a Service and a Deployment (one replica, not root).
    The same options give byte-identical output. See docs/sniffer.md.

    \b
    Example:
      docker build -t registry.example/netpol-learn:0.1.0 . && docker push registry.example/netpol-learn:0.1.0
      netpol-learn manifests --image registry.example/netpol-learn:0.1.0 --node-cidr 10.0.0.0/16 | kubectl apply -f -
    """
    from netpol_learn import render_manifests
    from netpol_learn._manifests import document_kinds

    text = render_manifests(namespace, image, template_dir, store_size=store_size, node_cidrs=node_cidrs)
    if not node_cidrs:
        _warn("no --node-cidr: the learning service's port 8080 admits every address (the sniffers use the node's "
              "network, which NetworkPolicy cannot select; tokens still decide who writes and who reads); give the "
              "nodes' and the API server's address ranges to narrow it (docs/sniffer.md)")
    write_text(output, text)
    kinds = document_kinds(text)
    click.echo(f"{len(kinds)} objects ({', '.join(kinds)}) in namespace {namespace} -> {_shown(output)}", err=True)


@main.command()
@click.option("--server", metavar="URL", default=None, help="The learning service (netpol-learn serve) at this URL, e.g. http://127.0.0.1:8080 through kubectl port-forward [default: Service netpol-learn in --namespace, through the API server's service proxy].")
@click.option("--token-file", type=_FILE, default=None, help="File holding a token of the service's read role [default without --server: the kubeconfig's bearer token].")
@click.option("--ca-file", type=_FILE, default=None, help="With --server: the CA bundle an https:// service's certificate is checked against [default: the system's].")
@click.option("--inventory-out", default=None, help="Also write the service's inventory (snapshot plus history, JSON) to this file; '-' is stdout.")
@click.option("--from-logs", is_flag=True, help="Read the sniffer pods' logs, not the service (lossy: see docs/sniffer.md).")
@_namespace_option(DEFAULT_NAMESPACE, "Namespace of the service and the sniffer pods.")
@click.option("-l", "--selector", default=SNIFFER_SELECTOR, show_default=True, help="Label selector of the sniffer pods (logs only).")
@_kube_options
@click.option("--since", "since_seconds", type=_Duration(), default=None, help="Only segments cut (service) or written (logs) in this last while, e.g. 30m, 1h, 2h30m, 7d [default: all there are].")
@_output_option("Flow log to write (JSON Lines); '-' is stdout.")
def collect(server: str | None, token_file: Path | None, ca_file: Path | None, inventory_out: str | None, from_logs: bool, namespace: str, selector: str,
            kubeconfig: Path | None, context: str | None, since_seconds: int | None, output: str) -> None:
    """Collect the sniffers' flow log: from the learning service, else from the sniffer pods' logs.

    With --server, reads GET /v1/flows (and, with --inventory-out, GET /v1/inventory) of the
    service at that URL, with the token of --token-file. Without it, reads Service netpol-learn
    in --namespace through the API with the kubeconfig and talks to the service through the API
    server's service proxy (the credentials need get on services and services/proxy there); the
    API server takes the Authorization header for itself, so the service's token goes in header
    Netpol-Learn-Token: --token-file, else the kubeconfig's bearer token. Nothing is written
    unless every answer came and was read as a flow log (an inventory).

    When that Service does not exist, or with --from-logs, the pods of the sniffer DaemonSet are
    listed and their logs read (and the previous container's, after a restart), and the complete
    flow-log segments in them merged: lossy (the kubelet rotates logs, a previous log is read once,
    overlapping collections count segments twice). A pod whose log cannot be read is a warning.
    The credentials need list on pods and get on pods/log in the namespace.

    \b
    Example:
      netpol-learn collect -o flows.jsonl --inventory-out inventory.json
      kubectl -n netpol-learn port-forward service/netpol-learn 8080:http &
      netpol-learn collect --server http://127.0.0.1:8080 --token-file token --since 1h -o last-hour.jsonl
      netpol-learn collect --from-logs --context admin@prod --since 1h -o last-hour.jsonl
    """
    from netpol_learn import collect as collect_logs
    from netpol_learn import CollectError, collect_from_service
    from netpol_learn._collect import SERVICE_NAME
    from netpol_learn._output import write_data

    if server is not None and from_logs:
        raise click.UsageError("--server and --from-logs: give one (the service, or the sniffer pods' logs)")
    if ca_file is not None and server is None:
        raise click.UsageError("--ca-file goes with --server (through the API server, the kubeconfig's CA is used)")
    if inventory_out is not None and from_logs:
        raise click.UsageError("--inventory-out needs the service; the sniffer pods' logs hold no inventory (netpol-learn inventory takes one)")
    if inventory_out == "-" and output == "-":
        raise click.UsageError("-o and --inventory-out cannot both be stdout")
    if since_seconds is not None:  # a duration in ns: collect takes whole seconds
        if since_seconds < 10**9:
            raise click.BadParameter("the duration must be at least 1s", param_hint="'--since'")
        since_seconds = -(-since_seconds // 10**9)
    got = None
    if not from_logs:
        got = collect_from_service(server, token_file, namespace=namespace, kubeconfig=kubeconfig, context=context,
                                   since_seconds=since_seconds, inventory=inventory_out is not None, ca_file=ca_file)
    if got is not None:
        write_flow_log(got.log, output)
        click.echo(f"{len(got.log.flows)} flows, {len(got.log.dns)} DNS names from the {got.where} -> {_shown(output)}", err=True)
        if inventory_out is not None:
            write_data(inventory_out, got.inventory)
            click.echo(f"inventory: {got.objects} objects, {got.changes} changes in its history -> {_shown(inventory_out)}", err=True)
        return
    if not from_logs:
        if inventory_out is not None:
            raise CollectError(f"--inventory-out: no Service {SERVICE_NAME} in namespace {namespace}, so no learning service to "
                                       "read the inventory from (netpol-learn inventory takes a snapshot; --from-logs reads only the flows)")
        _warn(f"no Service {SERVICE_NAME} in namespace {namespace}: reading the sniffer pods' logs instead, which is lossy "
              "(the kubelet rotates them, a restarted sniffer's earlier log is read only while it is the previous one, "
              "collections over overlapping windows count segments twice; docs/sniffer.md)")
    got = collect_logs(namespace, selector, kubeconfig, context, since_seconds, warn=_warn)
    write_flow_log(got.log, output)
    left = f" ({got.incomplete} incomplete left out)" if got.incomplete else ""
    click.echo(
        f"{got.readable} of {got.pods} pods, {got.segments} segments{left} -> {len(got.log.flows)} flows, "
        f"{len(got.log.dns)} DNS names -> {_shown(output)}",
        err=True,
    )

@main.command()
@click.option("--store", required=True, metavar="PATH|URL", help="The store: an SQLite file (created if missing; WAL beside it), or postgresql://... .")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Address to listen on; [::]:8080 for IPv6 [default: 127.0.0.1:8080].")
@click.option("--tokens-file", type=_FILE, default=None, help="Tokens and their roles, one 'TOKEN ROLE' per line (ROLE write or read) [default in a cluster: TokenReview and SubjectAccessReview].")
@click.option("--writer", "writers", multiple=True, metavar="USER", help="In a cluster: an identity allowed to post segments; repeatable [default: system:serviceaccount:NAMESPACE:netpol-learn-sniffer].")
@click.option("-n", "--namespace", default=None, help="The service's namespace, for the default writer and the readers' RBAC check [default: $POD_NAMESPACE, else the service account's].")
@click.option("--service-name", default=None, help="Its Service's name, whose services/proxy get readers need [default: netpol-learn].")
@_kube_options
@click.option("--watch/--no-watch", "watch", default=True, show_default=True, help="Keep the identity history: one watch of the API per kind.")
@click.option("--max-segment-size", type=_Size(), default="64Mi", show_default=True, help="Largest segment taken, compressed or not (larger: 413).")
@click.option("--max-future", type=_Duration(), default="10m", show_default=True, help="How far a segment's times may lie ahead of this clock (more: 422).")
@click.option("--tls-cert-file", type=_FILE, default=None, help="Serve HTTPS with this certificate (PEM) ...")
@click.option("--tls-key-file", type=_FILE, default=None, help="... and this key.")
def serve(store: str, listen: str | None, tokens_file: Path | None, writers, namespace: str | None, service_name: str | None,
          kubeconfig: Path | None, context: str | None, watch: bool, max_segment_size: int, max_future: int,
          tls_cert_file: Path | None, tls_key_file: Path | None) -> None:
    """Run the learning service: sniffers post segments to it, collect and status read from it.

    Keeps every segment once (a resend is acknowledged, not stored twice) in the store, with
    the identity history of one watch per kind of the whole cluster, and serves the merged
    flow log, the inventory, the learning status and Prometheus metrics. Every endpoint but
    /healthz and /readyz needs a bearer token: of the write role to post, of the read role for
    the rest. SIGTERM or SIGINT finishes the requests in flight and exits 0. See docs/service.md.

    \b
    Example:
      netpol-learn serve --store /var/lib/netpol-learn/store.db --listen 0.0.0.0:8080
      netpol-learn serve --store learn.db --tokens-file tokens.txt --no-watch
    """
    from netpol_learn._serve import DEFAULT_LISTEN, DEFAULT_SERVICE_NAME, Limits, ServeOptions
    from netpol_learn._serve import serve as run_service

    def info(message: str) -> None:
        click.echo(f"serve: {message}", err=True)

    options = ServeOptions(
        store=store, listen=listen or DEFAULT_LISTEN, tokens_file=None if tokens_file is None else str(tokens_file),
        writers=tuple(writers), namespace=namespace, service_name=service_name or DEFAULT_SERVICE_NAME,
        kubeconfig=None if kubeconfig is None else str(kubeconfig), context=context, watch=watch,
        limits=Limits(max_segment_size=max_segment_size, max_future=max_future),
        tls_cert=None if tls_cert_file is None else str(tls_cert_file), tls_key=None if tls_key_file is None else str(tls_key_file),
    )
    service = run_service(options, info=info, warn=_warn)
    info(f"stopped: {service.received_count} segments stored, {service.duplicate_count} resends acknowledged")


if __name__ == "__main__":  # pragma: no cover
    main()
