"""The command line: one verb per workflow step, each a few lines over the library.

Errors are one line on stderr and exit code 2 (``--debug`` shows the traceback); warnings are
lines on stderr starting with ``warning:``; long work shows a progress bar on a terminal only.
"""

from __future__ import annotations

import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import click

from netpol_learn._errors import NetpolLearnError
from netpol_learn.capture import DEFAULT_DEDUP_WINDOW, capture_files
from netpol_learn.flowlog import FlowLog, merge_logs, read_flow_log, write_flow_log


class _Group(click.Group):
    """Turns the library's errors into one line and exit code 2."""

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

    sizes = {p: max(p.stat().st_size, 1) if p.exists() else 1 for p in paths}
    done: dict[Path, int] = {}
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        transient=True, console=__import__("rich.console").console.Console(stderr=True),
    ) as bar:
        task = bar.add_task("reading captures", total=sum(sizes.values()))

        def report(path: Path, position: int) -> None:
            done[path] = min(position, sizes.get(path, position))
            bar.update(task, completed=sum(done.values()))

        yield report


def _summary(log: FlowLog, out: str) -> str:
    s = log.stats
    tunnels = sum(t.get("packets", 0) for t in s.get("tunnels", {}).values())
    parts = [f"{s.get('packets', 0)} packets", f"{s.get('duplicates', 0)} duplicates"]
    if tunnels:
        parts.append(f"{tunnels} tunnelled")
    return f"{', '.join(parts)} -> {len(log.flows)} flows, {len(log.dns)} DNS names -> {out}"


@main.command()
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", default="-", show_default=True, help="Flow log to write (JSON Lines); '-' is stdout.")
@click.option(
    "--dedup-window",
    type=click.FloatRange(min=0),
    default=DEFAULT_DEDUP_WINDOW,
    show_default=True,
    help="Seconds within which the same packet seen again (another interface, a tunnel, after NAT) counts once.",
)
def capture(pcaps: tuple[Path, ...], output: str, dedup_window: float) -> None:
    """Turn pcap/pcapng files (plain or gzip) into a flow log.

    Reads Ethernet (with VLAN tags), Linux cooked v1/v2 (tcpdump -i any), raw IP and loopback
    captures; IPv4 and IPv6; TCP, UDP, SCTP, ICMP; VXLAN, Geneve, IP-in-IP, GRE and flannel
    tunnels (flows come from the inner packets). A damaged file yields what could be read, with
    a warning naming the byte offset. The format is described in docs/flow-log.md.

    \b
    Example:
      tcpdump -i any -w node.pcap          # on a node, for a while
      netpol-learn capture node.pcap -o flows.jsonl
    """
    paths = list(pcaps)
    with _progress(paths) as report:
        log = capture_files(paths, dedup_window=dedup_window, warn=_warn, progress=report)
    write_flow_log(log, output)
    click.echo(_summary(log, output if output != "-" else "stdout"), err=True)


@main.command()
@click.argument("flow_logs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", default="-", show_default=True, help="Merged flow log to write; '-' is stdout.")
def merge(flow_logs: tuple[Path, ...], output: str) -> None:
    """Merge flow logs (several nodes, several days) into one.

    Counts add up, first/last seen widen; the result does not depend on the order of the inputs.

    \b
    Example:
      netpol-learn merge node-a.jsonl node-b.jsonl -o cluster.jsonl
    """
    log = merge_logs(read_flow_log(p) for p in flow_logs)
    write_flow_log(log, output)
    click.echo(f"{len(flow_logs)} logs -> {len(log.flows)} flows, {len(log.dns)} DNS names -> {output if output != '-' else 'stdout'}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
