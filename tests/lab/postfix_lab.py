"""A real Postfix relay chain on loopback that produces genuine multi-hop maillogs.

Four Postfix instances (``postmulti``), each posing as one host with its own loopback address and
hostname: ``mx1`` (inbound edge) -> ``filter1`` (content filter with same-host reinjection) ->
``mbox1`` (final delivery, long queue IDs) and ``out1`` (outbound relay to a dead next hop).
Test mail is sent with swaks and with sendmail(1); the ground truth written to ``expected.json``
comes from what was sent and how the chain is configured, never from reading the logs.

Run as root on Debian 12 with the ``postfix`` and ``swaks`` packages installed (nothing is
installed here)::

    python3 tests/lab/postfix_lab.py run --out DIR [--quick] [--keep-running]
    python3 tests/lab/postfix_lab.py run --out DIR --quick --central [--no-journal]
    python3 tests/lab/postfix_lab.py stop

The output holds one directory per host shaped like that server's filesystem
(``<host>/etc/postfix/main.cf``, ``<host>/var/log/...``), plus ``expected.json`` and
``mtimes.json`` (git does not keep mtimes, which year inference needs). ``--central`` adds a
central log host: every host logs through syslog, forwarded over TCP to a second rsyslogd whose
files go to ``OUT/loghost/...`` (see the "central log host" section below).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from tests.lab import filter_servers
except ModuleNotFoundError:  # run as a script: tests/lab is sys.path[0]
    import filter_servers  # type: ignore[no-redef]

DOMAIN = "example.test"
SMTP_PORT = 2525
REINJECT_PORT = 10025
DEAD_HOP = ("127.0.0.9", 2599)
LAB_NETWORK = "127.0.0.16/28"

STATE_DIR = Path("/var/lib/postfix-lab")
DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
ANCHOR_MARK = "# postfix-lab anchor: default instance for postmulti, never started"
RSYSLOG_PIDFILE = STATE_DIR / "rsyslog" / "rsyslogd.pid"
# Central mode: a second rsyslogd, the log host, receiving on loopback TCP.
LOGHOST_DIR = STATE_DIR / "loghost"
LOGHOST_PIDFILE = LOGHOST_DIR / "rsyslogd.pid"
LOCK_FILE = Path("/run/lock/postfix-lab.lock")
HOSTS_FILE = Path("/etc/hosts")
HOSTS_BEGIN = "# BEGIN postfix-lab (tests/lab/postfix_lab.py)"
HOSTS_END = "# END postfix-lab"


class LabError(RuntimeError):
    """The lab could not be built, run or torn down."""


@dataclass(frozen=True, slots=True)
class LabHost:
    name: str
    ip: str
    role: str
    # How the host logs: "maillog_file" (postlogd) or "syslog" (the lab's private rsyslogd).
    log_via: str
    # Path of the log on the simulated host, as an admin of that host would find it.
    log_path: str
    # Where the live log is written while the lab runs (differs from log_path for syslog hosts,
    # so the lab never touches the machine's own /var/log/maillog or /var/log/mail.log).
    live_log: str
    log_format: str
    syslog_name: str
    syslog_facility: str = "mail"
    long_queue_ids: bool = False

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def instance(self) -> str:
        return f"postfix-{self.name}"

    @property
    def config_dir(self) -> Path:
        return Path(f"/etc/postfix-{self.name}")

    @property
    def spool_dirs(self) -> tuple[Path, ...]:
        return (Path(f"/var/spool/postfix-{self.name}"), Path(f"/var/lib/postfix-{self.name}"))


def _postlog_host(name: str, ip: str, role: str, log_file: str, syslog_name: str,
                  long_ids: bool = False) -> LabHost:
    return LabHost(name=name, ip=ip, role=role, log_via="maillog_file", log_path=log_file,
                   live_log=log_file, log_format="postlogd", syslog_name=syslog_name,
                   long_queue_ids=long_ids)


def lab_hosts(with_syslog: bool) -> tuple[LabHost, ...]:
    """The simulated hosts; with_syslog routes filter1 and mbox1 through the private rsyslogd."""
    mx1 = _postlog_host("mx1", "127.0.0.21", "inbound edge", "/var/log/postfix-mx1.log",
                        "postfix")
    # out1 keeps the multi-instance default syslog_name (postfix-out1) and names its log with
    # $multi_instance_name, as a multi-instance admin would.
    out1 = _postlog_host("out1", "127.0.0.24", "outbound relay", "/var/log/postfix-out1.log",
                         "postfix-out1")
    if with_syslog:
        filter1 = LabHost(name="filter1", ip="127.0.0.22", role="content filter",
                          log_via="syslog", log_path="/var/log/maillog",
                          live_log=str(STATE_DIR / "rsyslog" / "filter1-maillog"),
                          log_format="bsd", syslog_name="postfix", syslog_facility="local1")
        mbox1 = LabHost(name="mbox1", ip="127.0.0.23", role="mailbox server",
                        log_via="syslog", log_path="/var/log/mail.log",
                        live_log=str(STATE_DIR / "rsyslog" / "mbox1-mail.log"),
                        log_format="rfc3339", syslog_name="postfix", syslog_facility="local2",
                        long_queue_ids=True)
    else:
        filter1 = _postlog_host("filter1", "127.0.0.22", "content filter",
                                "/var/log/postfix-filter1.log", "postfix")
        mbox1 = _postlog_host("mbox1", "127.0.0.23", "mailbox server",
                              "/var/log/postfix-mbox1.log", "postfix", long_ids=True)
    return (mx1, filter1, mbox1, out1)


ALL_HOST_NAMES = ("mx1", "filter1", "mbox1", "out1")
# Clients that are not Postfix hosts: an internal workstation (inside mynetworks), an outside
# sender, and an outside client that mx1 refuses by address.
CLIENTS = {
    "ws1": ("127.0.0.30", f"ws1.{DOMAIN}"),
    "ext": ("127.0.0.50", "ext-client.example.org"),
    "bad": ("127.0.0.66", None),
}
MAILBOX_USERS = ("alice", "bob", "carol", "postmaster", "devnull")
# A mailbox whose SMTPUTF8 local part ends in U+202E RIGHT-TO-LEFT OVERRIDE (hostile set): the
# maildir has an ASCII name, the address is what Postfix logs.
RLO = "\u202e"
BIDI_MAILBOX = (f"bob{RLO}", "bob-rlo")
# Forged Postfix log fields inside a quoted local part (hostile set).
FORGED_LOCALPART = '"x; from=<ceo@corp.example> to=<cfo@corp.example>"'


# --------------------------------------------------------------------------- small helpers


def _run(args: Sequence[str], *, check: bool = True, stdin: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(args)} exited {proc.returncode}: "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _postconf(host: LabHost, *args: str) -> None:
    _run(["postconf", "-c", str(host.config_dir), *args])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _listening() -> set[tuple[str, int]]:
    # Read the kernel's socket table rather than probing: a probe connection would put
    # "lost connection after CONNECT" noise into the very logs the lab is meant to produce.
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # TCP_LISTEN
            continue
        addr_hex, port_hex = fields[1].split(":")
        ip = socket.inet_ntoa(bytes.fromhex(addr_hex)[::-1])
        found.add((ip, int(port_hex, 16)))
    return found


def _wait_listening(ip: str, port: int, deadline: float) -> None:
    while (ip, port) not in _listening():
        if time.monotonic() > deadline:
            raise LabError(f"nothing listens on {ip}:{port}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- configuration


def _main_cf(host: LabHost, quick: bool, chain: str = "standard") -> dict[str, str]:
    cfg = {
        "compatibility_level": "3.7",
        # postmulti creates instances with inet services and local submission disabled.
        "master_service_disable": "",
        "authorized_submit_users": "static:anyone",
        "myhostname": host.fqdn,
        "mydomain": DOMAIN,
        "myorigin": "$myhostname",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "smtp_bind_address": host.ip,
        # Next hops are names from the lab's /etc/hosts block, not DNS.
        "smtp_host_lookup": "native",
        "mynetworks": f"127.0.0.1/32, {LAB_NETWORK}",
        "mydestination": "",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "smtpd_banner": "$myhostname ESMTP $mail_name",
        "syslog_name": host.syslog_name,
        "syslog_facility": host.syslog_facility,
        "maillog_file": host.live_log if host.log_via == "maillog_file" else "",
        "queue_run_delay": "10s",
        "minimal_backoff_time": "10s",
        "maximal_backoff_time": "20s",
        "2bounce_notice_recipient": f"postmaster@{DOMAIN}",
        "enable_long_queue_ids": "yes" if host.long_queue_ids else "no",
    }
    cdir = host.config_dir
    if host.name == "out1":
        if host.log_via == "maillog_file":
            cfg["maillog_file"] = "/var/log/${multi_instance_name}.log"
        del cfg["syslog_name"]
    if host.name == "mx1":
        cfg |= {
            "relay_domains": f"{DOMAIN}, mbox1.{DOMAIN}",
            "relayhost": f"[filter1.{DOMAIN}]:{SMTP_PORT}",
            # One transport for every destination, so a multi-recipient message leaves mx1 in
            # one transaction and the split happens downstream at filter1.
            "relay_transport": "smtp",
            "smtpd_client_restrictions": f"check_client_access cidr:{cdir}/client_access",
            "smtpd_recipient_restrictions":
                f"check_recipient_access texthash:{cdir}/recipient_access, permit",
        }
    elif host.name == "filter1":
        cfg |= {
            "relay_domains": f"{DOMAIN}, mbox1.{DOMAIN}",
            "relayhost": f"[out1.{DOMAIN}]:{SMTP_PORT}",
            "transport_maps": f"texthash:{cdir}/transport",
            "content_filter": f"scan:[{host.ip}]:{REINJECT_PORT}",
            "header_checks": f"regexp:{cdir}/header_checks",
            # Bounces quote the original headers as an attachment; don't reject those again.
            "nested_header_checks": "",
        }
    elif host.name == "mbox1":
        cfg |= {
            "mydestination": f"$myhostname, localhost.{DOMAIN}, localhost",
            "alias_maps": f"hash:{cdir}/aliases",
            "alias_database": f"hash:{cdir}/aliases",
            "virtual_mailbox_domains": DOMAIN,
            "virtual_mailbox_base": str(STATE_DIR / "mbox1" / "vmail"),
            "virtual_mailbox_maps": f"texthash:{cdir}/vmailbox",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "transport_maps": f"texthash:{cdir}/transport",
        }
    elif host.name == "out1":
        cfg |= {
            "relayhost": f"[{DEAD_HOP[0]}]:{DEAD_HOP[1]}",
            # Internal mail (returned notifications) goes back in through the inbound edge.
            "transport_maps": f"texthash:{cdir}/transport",
            "notify_classes": "resource, software, 2bounce",
            "smtp_connect_timeout": "5s",
        }
        if not quick:
            cfg |= {
                "maximal_queue_lifetime": "75s",
                "bounce_queue_lifetime": "75s",
                "delay_warning_time": "25s",
            }
    if chain == "filters":
        cfg |= _filters_main_cf(host)
    return cfg


# --------------------------------------------------------------------------- the filters chain
# The `filters` scenario set runs the same four hosts with content filters in front:
# mx1 hands every SMTP transaction to a before-queue proxy (smtpd_proxy_filter), refuses
# unknown example.test users (relay_recipient_maps, so VRFY of one is refused) and logs every
# Subject (header_checks INFO); filter1's content filter is a Python SMTP filter on 127.0.0.1
# that re-injects with XFORWARD NAME/ADDR but no IDENT and answers without `queued as`.
FILTERS_PROXY = ("127.0.0.21", 10030)  # mx1's before-queue proxy (tests/lab/filter_servers.py)
FILTERS_PROXY_BACK = ("127.0.0.21", 10026)  # mx1's smtpd behind the proxy
FILTERS_SCAN = ("127.0.0.1", 10024)  # filter1's after-queue filter
FILTERS_REINJECT = ("127.0.0.1", 10025)  # filter1's smtpd for the filter's re-injection


def _filters_main_cf(host: LabHost) -> dict[str, str]:
    cdir = host.config_dir
    if host.name == "mx1":
        return {
            "relay_recipient_maps": f"texthash:{cdir}/relay_recipients",
            "header_checks": f"regexp:{cdir}/header_checks",
        }
    if host.name == "filter1":
        return {"content_filter": f"scan:[{FILTERS_SCAN[0]}]:{FILTERS_SCAN[1]}"}
    return {}


def _filters_map_files(host: LabHost) -> dict[str, str]:
    if host.name == "mx1":
        users = "".join(f"{u}@{DOMAIN} ok\n" for u in MAILBOX_USERS)
        return {
            "relay_recipients": users + f"@mbox1.{DOMAIN} ok\n",
            "header_checks": "/^Subject:/ INFO\n",
        }
    if host.name == "filter1":
        return {
            "header_checks": "/^Subject:.*FORBIDDEN/ REJECT Message content rejected by lab "
            "policy\n/^Subject:.*URGENT/ WARN urgent mail\n",
        }
    return {}


def _filters_master(host: LabHost) -> None:
    listener = f"{host.ip}:{SMTP_PORT}"
    if host.name == "mx1":
        proxy = f"{FILTERS_PROXY[0]}:{FILTERS_PROXY[1]}"
        _postconf(host, "-P", f"{listener}/inet/smtpd_proxy_filter={proxy}")
        back = f"{FILTERS_PROXY_BACK[0]}:{FILTERS_PROXY_BACK[1]}"
        _postconf(host, "-M", f"{back}/inet={back} inet n - n - - smtpd")
        for param in ("smtpd_proxy_filter=", "smtpd_client_restrictions=",
                      "smtpd_recipient_restrictions=permit_mynetworks,reject",
                      f"mynetworks={host.ip}/32",
                      "receive_override_options=no_unknown_recipient_checks"):
            _postconf(host, "-P", f"{back}/inet/{param}")
    elif host.name == "filter1":
        # The standard re-injection listener stays (unused); the filter re-injects on
        # 127.0.0.1, as amavis-style set-ups do.
        back = f"{FILTERS_REINJECT[0]}:{FILTERS_REINJECT[1]}"
        _postconf(host, "-M", f"{back}/inet={back} inet n - n - - smtpd")
        for param in ("content_filter=", "smtpd_client_restrictions=",
                      "smtpd_recipient_restrictions=permit_mynetworks,reject",
                      "mynetworks=127.0.0.0/8",
                      ("receive_override_options=no_unknown_recipient_checks,"
                       "no_header_body_checks"),
                      "smtpd_authorized_xforward_hosts=127.0.0.0/8"):
            _postconf(host, "-P", f"{back}/inet/{param}")


def _map_files(host: LabHost, chain: str = "standard") -> dict[str, str]:
    if chain == "filters":
        return {**_standard_map_files(host), **_filters_map_files(host)}
    return _standard_map_files(host)


def _standard_map_files(host: LabHost) -> dict[str, str]:
    if host.name == "mx1":
        return {
            "client_access": "127.0.0.66/32 REJECT Blocked by lab client policy\n",
            "recipient_access": f"blocked@{DOMAIN} REJECT Mailbox closed by policy\n",
        }
    if host.name == "filter1":
        to_mbox = f"relay:[mbox1.{DOMAIN}]:{SMTP_PORT}"
        return {
            "transport": f"{DOMAIN} {to_mbox}\nmbox1.{DOMAIN} {to_mbox}\n",
            "header_checks": "/^Subject:.*FORBIDDEN/ REJECT Message content rejected by lab policy\n",
        }
    if host.name == "mbox1":
        return {
            "vmailbox": "".join(f"{u}@{DOMAIN} {DOMAIN}/{u}/\n" for u in MAILBOX_USERS)
            + f"{BIDI_MAILBOX[0]}@{DOMAIN} {DOMAIN}/{BIDI_MAILBOX[1]}/\n",
            "aliases": f"root: postmaster@{DOMAIN}\nfwd: bob@{DOMAIN}\n",
            "transport": f"devnull@{DOMAIN} discard:silently\n",
        }
    if host.name == "out1":
        return {"transport": f"{DOMAIN} smtp:[mx1.{DOMAIN}]:{SMTP_PORT}\n"}
    return {}


def _configure_master(host: LabHost, chain: str = "standard") -> None:
    listener = f"{host.ip}:{SMTP_PORT}"
    _postconf(host, "-MX", "smtp/inet")
    _postconf(host, "-M", f"{listener}/inet={listener} inet n - n - - smtpd")
    if host.name == "filter1":
        _postconf(host, "-M", "scan/unix=scan unix - - n - 10 smtp")
        for param in ("smtp_send_xforward_command=yes", "disable_mime_output_conversion=yes",
                      "syslog_name=postfix/scan"):
            _postconf(host, "-P", f"scan/unix/{param}")
        back = f"{host.ip}:{REINJECT_PORT}"
        _postconf(host, "-M", f"{back}/inet={back} inet n - n - - smtpd")
        for param in ("content_filter=", "smtpd_client_restrictions=",
                      "smtpd_recipient_restrictions=permit_mynetworks,reject",
                      f"mynetworks={host.ip}/32",
                      ("receive_override_options=no_unknown_recipient_checks,"
                      "no_header_body_checks"),
                      f"smtpd_authorized_xforward_hosts={host.ip}/32"):
            _postconf(host, "-P", f"{back}/inet/{param}")
    if chain == "filters":
        _filters_master(host)
    _postconf(host, "-F", "*/*/chroot=n")


def _compact_main_cf(host: LabHost) -> None:
    """Rewrite main.cf as its non-default settings only, like a hand-kept server config.

    postmulti copies the fully commented main.cf prototype (about 28 KB); the settings are
    unchanged, only the comments go.
    """
    settings = _run(["postconf", "-c", str(host.config_dir), "-n"]).stdout
    header = f"# {host.fqdn}: {host.role} (Postfix lab)\n"
    _write(host.config_dir / "main.cf", header + settings)


def _write_anchor() -> None:
    """Give postmulti the default instance it needs; refuse to touch a real configuration."""
    if DEFAULT_MAIN_CF.exists():
        if ANCHOR_MARK not in DEFAULT_MAIN_CF.read_text():
            raise LabError(f"{DEFAULT_MAIN_CF} exists and is not the lab's anchor; the lab "
                           "only runs on a machine without a configured default Postfix")
        return
    _write(DEFAULT_MAIN_CF, f"{ANCHOR_MARK}\ncompatibility_level = 3.6\n"
           "inet_interfaces = loopback-only\ninet_protocols = ipv4\nmydestination =\n"
           "alias_maps =\nalias_database =\n")


def _hosts_block() -> str:
    lines = [HOSTS_BEGIN]
    lines += [f"{h.ip} {h.fqdn} {h.name}" for h in lab_hosts(False)]
    lines += [f"{ip} {name}" for ip, name in CLIENTS.values() if name]
    lines.append(HOSTS_END)
    return "\n".join(lines) + "\n"


def _remove_hosts_block() -> None:
    text = HOSTS_FILE.read_text()
    if HOSTS_BEGIN not in text:
        return
    head, _, rest = text.partition(HOSTS_BEGIN)
    _, _, tail = rest.partition(HOSTS_END + "\n")
    HOSTS_FILE.write_text(head + tail)


def _add_hosts_block() -> None:
    _remove_hosts_block()
    text = HOSTS_FILE.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    HOSTS_FILE.write_text(text + _hosts_block())


def _rsyslog_conf(hosts: Sequence[LabHost], forward_port: int | None = None) -> str:
    # One facility per syslog host; the templates hard-code the simulated host name because
    # every instance logs through the same daemon on the same machine. With forward_port
    # (central mode) each host's lines also go to the log host, see _forward_actions.
    lines = [
        'module(load="imuxsock" SysSock.Use="on" SysSock.Name="/dev/log")',
        f'global(workDirectory="{STATE_DIR / "rsyslog"}")',
    ]
    for h in hosts:
        if h.log_via != "syslog":
            continue
        if h.log_format == "bsd":
            stamp = "%timereported:::date-rfc3164%"
        else:
            stamp = "%timereported:::date-rfc3339%"
        tpl = f"lab_{h.name}"
        lines.append(f'template(name="{tpl}" type="string" '
                     f'string="{stamp} {h.name} %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")')
        forward = "" if forward_port is None else _forward_actions(lines, h, forward_port)
        lines.append(f'if $syslogfacility-text == "{h.syslog_facility}" then {{ '
                     f'action(type="omfile" file="{h.live_log}" template="{tpl}"){forward} '
                     'stop }')
    lines.append("*.* stop")
    return "\n".join(lines) + "\n"


def _start_rsyslog(hosts: Sequence[LabHost], forward_port: int | None = None) -> None:
    conf = STATE_DIR / "rsyslog" / "rsyslog.conf"
    _write(conf, _rsyslog_conf(hosts, forward_port))
    _run(["rsyslogd", "-f", str(conf), "-i", str(RSYSLOG_PIDFILE)])
    deadline = time.monotonic() + 10
    while not Path("/dev/log").exists():
        if time.monotonic() > deadline:
            raise LabError("rsyslogd did not create /dev/log")
        time.sleep(0.1)


def _stop_rsyslog(pidfile: Path = RSYSLOG_PIDFILE) -> None:
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (ValueError, ProcessLookupError):
        pass
    pidfile.unlink(missing_ok=True)


def _syslog_wanted() -> bool:
    """Syslog hosts need /dev/log for the lab's own rsyslogd; never take over someone else's."""
    return shutil.which("rsyslogd") is not None and not Path("/dev/log").exists()


def build_hosts(quick: bool, with_syslog: bool, central_port: int | None = None,
                chain: str = "standard") -> tuple[LabHost, ...]:
    """Create, configure and start every instance (the previous lab must be gone).

    With central_port every host logs through syslog and the lab's rsyslogd forwards it all
    to the log host listening on that port (central mode). ``chain`` is ``standard`` or
    ``filters`` (see ``_filters_main_cf``); the filters chain's Python filters are started
    by ``_start_filters``.
    """
    hosts = lab_hosts(with_syslog) if central_port is None else central_lab_hosts()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    _write_anchor()
    _add_hosts_block()
    _run(["postmulti", "-e", "init"])
    vmail = STATE_DIR / "mbox1" / "vmail"
    vmail.mkdir(parents=True, exist_ok=True)
    os.chown(vmail, 65534, 65534)
    for host in hosts:
        _run(["postmulti", "-I", host.instance, "-G", "lab", "-e", "create"])
        _postconf(host, "-e",
                  *(f"{k}={v}" for k, v in _main_cf(host, quick, chain).items()))
        for fname, text in _map_files(host, chain).items():
            _write(host.config_dir / fname, text)
            # Lookup tables are texthash: (no postmap run, which takes seconds on a loaded
            # machine); aliases keep the usual hash: database built by postalias.
            if fname == "aliases":
                _run(["postalias", "-c", str(host.config_dir), f"hash:{host.config_dir / fname}"])
        _configure_master(host, chain)
        _compact_main_cf(host)
        Path(host.live_log).parent.mkdir(parents=True, exist_ok=True)
    if central_port is not None:
        _start_loghost(central_port)
        _start_rsyslog(hosts, central_port)
    elif with_syslog:
        _start_rsyslog(hosts)
    for host in hosts:
        _run(["postmulti", "-i", host.instance, "-e", "enable"])
    # Instances share nothing but the anchor, so they can start side by side (each start runs
    # `postfix check` and takes seconds).
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(lambda h: _run(["postfix", "-c", str(h.config_dir), "start"]), hosts))
    deadline = time.monotonic() + 30
    for host in hosts:
        _wait_listening(host.ip, SMTP_PORT, deadline)
    _wait_listening(hosts[1].ip, REINJECT_PORT, deadline)
    if chain == "filters":
        _wait_listening(*FILTERS_PROXY_BACK, deadline)
        _wait_listening(*FILTERS_REINJECT, deadline)
    return hosts


def _start_filters() -> list[Any]:
    """The filters chain's two Python SMTP filters (threads of this process)."""
    for addr in (FILTERS_PROXY, FILTERS_SCAN):
        if addr in _listening():
            raise LabError(f"{addr[0]}:{addr[1]} is taken; the filters chain needs it")
    return [
        filter_servers.start_before_queue_proxy(FILTERS_PROXY, FILTERS_PROXY_BACK,
                                                f"proxy.mx1.{DOMAIN}"),
        filter_servers.start_after_queue_filter(FILTERS_SCAN, FILTERS_REINJECT,
                                                f"scan.filter1.{DOMAIN}"),
    ]


def _is_running(host_name: str) -> bool:
    cdir = f"/etc/postfix-{host_name}"
    return _run(["postfix", "-c", cdir, "status"], check=False).returncode == 0


def stop_lab() -> None:
    """Stop and remove every lab instance, spool, log, hosts entry and the anchor; idempotent."""
    for name in ALL_HOST_NAMES:
        cdir = Path(f"/etc/postfix-{name}")
        if (cdir / "main.cf").exists():
            _run(["postfix", "-c", str(cdir), "stop"], check=False)
            # postmulti -e destroy takes seconds per instance; the default main.cf that lists
            # the instances is the lab's own anchor and goes away below.
            for _ in range(100):
                if not _is_running(name):
                    break
                time.sleep(0.1)
        for path in (cdir, Path(f"/var/spool/postfix-{name}"), Path(f"/var/lib/postfix-{name}")):
            shutil.rmtree(path, ignore_errors=True)
        Path(f"/var/log/postfix-{name}.log").unlink(missing_ok=True)
    _stop_rsyslog()
    _stop_rsyslog(LOGHOST_PIDFILE)
    if DEFAULT_MAIN_CF.exists() and ANCHOR_MARK in DEFAULT_MAIN_CF.read_text():
        DEFAULT_MAIN_CF.unlink()
    if HOSTS_FILE.exists():
        _remove_hosts_block()
    shutil.rmtree(STATE_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- central log host
#
# Central mode: every host logs through syslog. The lab's rsyslogd (the senders' side) writes
# each host's own file as in the standard mode and forwards every line over loopback TCP, with
# the simulated host's name as HOSTNAME and facility mail, to a second rsyslogd: the log host.
# It writes the layouts central log hosts use, one combined file and one file per sender.

LOGHOST_ADDRESS = "127.0.0.1"
# Paths on the log host (relative to its root), the format of their lines, and which hosts'
# lines they hold.
LOGHOST_COMBINED = "var/log/mail.log"
LOGHOST_COMBINED_ISO = "var/log/mail-iso.log"
LOGHOST_PER_HOST = "var/log/remote/{host}/mail.log"
LOGHOST_JOURNAL_DIR = "var/log/journal/remote"
LOGHOST_CONF = "etc/rsyslog.d/50-remote.conf"


def central_lab_hosts() -> tuple[LabHost, ...]:
    """The four hosts of central mode: all log through syslog, one facility each."""
    def syslog_host(name: str, ip: str, role: str, log_path: str, log_format: str,
                    facility: str, syslog_name: str = "postfix",
                    long_ids: bool = False) -> LabHost:
        live = STATE_DIR / "rsyslog" / f"{name}-{Path(log_path).name}"
        return LabHost(name=name, ip=ip, role=role, log_via="syslog", log_path=log_path,
                       live_log=str(live), log_format=log_format, syslog_name=syslog_name,
                       syslog_facility=facility, long_queue_ids=long_ids)

    return (
        syslog_host("mx1", "127.0.0.21", "inbound edge", "/var/log/mail.log", "bsd", "local0"),
        syslog_host("filter1", "127.0.0.22", "content filter", "/var/log/maillog", "bsd",
                    "local1"),
        syslog_host("mbox1", "127.0.0.23", "mailbox server", "/var/log/mail.log", "rfc3339",
                    "local2", long_ids=True),
        # The multi-instance default syslog_name, as in the standard mode.
        syslog_host("out1", "127.0.0.24", "outbound relay", "/var/log/maillog", "rfc3339",
                    "local3", syslog_name="postfix-out1"),
    )


def _forward_actions(lines: list[str], host: LabHost, port: int) -> str:
    """Add host's forwarding template to lines; return the rsyslog statements that forward.

    The lab's facilities local0..3 only tell the simulated hosts apart inside one daemon; a real
    host logs as mail, so the forwarded PRI is mail with the line's own severity.
    """
    tpl = f"lab_fwd_{host.name}"
    lines.append(f'template(name="{tpl}" type="string" string="<%$!pri%>'
                 f'%timereported:::date-rfc3339% {host.name} '
                 '%syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%")')
    return (' set $!pri = 16 + $syslogseverity; '
            f'action(type="omfwd" target="{LOGHOST_ADDRESS}" port="{port}" protocol="tcp" '
            f'TCP_Framing="octet-counted" template="{tpl}" queue.type="LinkedList" '
            'action.resumeRetryCount="-1" action.resumeInterval="1")')


def loghost_conf(port: int, root: str = "") -> str:
    """The log host's rsyslog configuration: imtcp on loopback, three layouts of mail.*.

    root prefixes every path (the lab's state directory while it runs; empty for the copy in
    the output, which shows the paths the log host itself uses).
    """
    bsd = ("%timereported:::date-rfc3164% %HOSTNAME% "
           "%syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
    iso = ("%timereported:::date-rfc3339% %HOSTNAME% "
           "%syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\\n")
    per_host = f"{root}/{LOGHOST_PER_HOST.format(host='%HOSTNAME%')}"
    lines = [
        'module(load="imtcp")',
        *([f'global(workDirectory="{root}/work")'] if root else []),
        f'template(name="central_bsd" type="string" string="{bsd}")',
        f'template(name="central_iso" type="string" string="{iso}")',
        f'template(name="central_per_host" type="string" string="{per_host}")',
        'ruleset(name="remote") {',
        '  if $syslogfacility-text == "mail" then {',
        f'    action(type="omfile" file="{root}/{LOGHOST_COMBINED}" template="central_bsd")',
        f'    action(type="omfile" file="{root}/{LOGHOST_COMBINED_ISO}" '
        'template="central_iso")',
        '    action(type="omfile" dynaFile="central_per_host" template="central_bsd")',
        '  }',
        '  stop',
        '}',
        f'input(type="imtcp" address="{LOGHOST_ADDRESS}" port="{port}" ruleset="remote")',
    ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOGHOST_ADDRESS, 0))
        port: int = sock.getsockname()[1]
        return port


def _start_loghost(port: int) -> None:
    if shutil.which("rsyslogd") is None:
        raise LabError("central mode needs rsyslogd (install rsyslog)")
    (LOGHOST_DIR / "work").mkdir(parents=True, exist_ok=True)
    conf = LOGHOST_DIR / "rsyslog.conf"
    _write(conf, loghost_conf(port, str(LOGHOST_DIR)))
    _run(["rsyslogd", "-f", str(conf), "-i", str(LOGHOST_PIDFILE)])
    _wait_listening(LOGHOST_ADDRESS, port, time.monotonic() + 10)


def _host_field_counts(path: Path, host_field: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            fields = line.split(maxsplit=host_field + 1)
            if len(fields) > host_field:
                name = fields[host_field].decode(errors="replace")
                counts[name] = counts.get(name, 0) + 1
    return counts


def _loghost_counts() -> list[dict[str, int]]:
    """Lines per host name in each of the log host's layouts, as written so far."""
    per_host = {}
    for name in ALL_HOST_NAMES:
        path = LOGHOST_DIR / LOGHOST_PER_HOST.format(host=name)
        if path.exists():
            per_host[name] = len(path.read_bytes().splitlines())
    return [_host_field_counts(LOGHOST_DIR / LOGHOST_COMBINED, 3),
            _host_field_counts(LOGHOST_DIR / LOGHOST_COMBINED_ISO, 1), per_host]


def _master_pid(host: LabHost) -> int | None:
    try:
        return int((host.spool_dirs[0] / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def drain_to_loghost(hosts: Sequence[LabHost], timeout: float = 30) -> float:
    """Stop the instances, wait until the log host holds every line, stop both rsyslogds.

    Stopping Postfix first fixes the per-host files (out1 retries its deferred mail every few
    seconds otherwise); the log host is stopped cleanly (SIGTERM) so omfile flushes. Returns
    the seconds spent waiting for the log host.
    """
    # Wait for each master process itself: `postfix status` would log a line of its own.
    masters = [_master_pid(h) for h in hosts]
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(lambda h: _run(["postfix", "-c", str(h.config_dir), "stop"],
                                     check=False), hosts))
    deadline = time.monotonic() + 20
    for pid in masters:
        while pid is not None and _pid_alive(pid):
            if time.monotonic() > deadline:
                raise LabError(f"Postfix master {pid} did not stop")
            time.sleep(0.05)
    start = time.monotonic()
    previous: dict[str, int] = {}
    while True:
        sent = {h.name: len(Path(h.live_log).read_bytes().splitlines()) for h in hosts}
        received = _loghost_counts()
        if sent == previous and all(layout == sent for layout in received):
            break
        if time.monotonic() - start > timeout:
            raise LabError(f"the log host did not receive every line within {timeout:.0f}s: "
                           f"sent {sent}, received {received}")
        previous = sent
        time.sleep(0.3)
    waited = time.monotonic() - start
    _stop_rsyslog()
    _stop_rsyslog(LOGHOST_PIDFILE)
    return waited


def _sshfleet() -> Any:
    """tests/sshfleet.py, which holds the journal export conversion. Run as a script the lab
    has only tests/lab on sys.path; under pytest tests/ is there already."""
    tests_dir = str(Path(__file__).resolve().parent.parent)
    if tests_dir not in sys.path:
        sys.path.append(tests_dir)
    import sshfleet
    return sshfleet


def write_remote_journals(loghost: Path, now: float | None = None) -> dict[str, Path]:
    """Real journal files of the lines the log host received, as systemd-journal-remote files
    them: one ``var/log/journal/remote/remote-<host>.journal`` per sending host.

    The lines come from the log host's RFC 3339 file (``var/log/mail-iso.log`` under the log
    host root ``loghost``; microsecond times), split by their HOSTNAME; each entry has
    ``_HOSTNAME=<host>`` and that host's own _MACHINE_ID, SYSLOG_IDENTIFIER, _PID, MESSAGE and
    __REALTIME_TIMESTAMP. Journal files are preallocated (8 MB each), so the committed fixture
    leaves them out and a consumer builds them with this function.
    """
    fleet = _sshfleet()
    by_host: dict[str, list[str]] = {}
    text = (loghost / LOGHOST_COMBINED_ISO).read_text(encoding="utf-8")
    for line in text.splitlines():
        by_host.setdefault(line.split(" ", 2)[1], []).append(line)
    journal_dir = loghost / LOGHOST_JOURNAL_DIR
    journal_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, lines in sorted(by_host.items()):
        export = fleet.journal_export_from_syslog("\n".join(lines), fleet.machine_id(name), now)
        path = journal_dir / f"remote-{name}.journal"
        path.unlink(missing_ok=True)
        try:
            fleet.write_journal(export, path)
        except fleet.FleetError as exc:
            raise LabError(f"{name}: {exc}") from None
        written[name] = path
    return written


def _copy_loghost(out: Path, port: int, journal: bool, mtimes: dict[str, float]
                  ) -> dict[str, Path]:
    """Copy the log host's layouts to out/loghost; returns layout (relative path) -> file."""
    root = out / "loghost"
    files: dict[str, Path] = {}
    sources = [LOGHOST_COMBINED, LOGHOST_COMBINED_ISO]
    sources += [LOGHOST_PER_HOST.format(host=n) for n in ALL_HOST_NAMES]
    for rel in sources:
        live = LOGHOST_DIR / rel
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(live, dest)
        files[rel] = dest
        mtimes[str(dest.relative_to(out))] = os.stat(live).st_mtime
    _write(root / LOGHOST_CONF, loghost_conf(port))
    if journal:
        for name, path in write_remote_journals(root).items():
            files[str(path.relative_to(root))] = path
    return files


def _loghost_expected(port: int, hosts: Sequence[LabHost], journal: bool
                      ) -> dict[str, object]:
    names = [h.name for h in hosts]
    return {
        "address": f"{LOGHOST_ADDRESS}:{port}",
        "receiver": "rsyslogd, imtcp on loopback (config: loghost/" + LOGHOST_CONF + ")",
        "senders": {h.name: {"facility_on_sender": h.syslog_facility, "forwarded_as": "mail",
                             "hostname": h.name} for h in hosts},
        "transport": "omfwd protocol tcp, octet-counted framing, RFC 3339 timestamps",
        "layouts": {
            LOGHOST_COMBINED: {"format": "bsd", "hosts": names},
            LOGHOST_COMBINED_ISO: {"format": "rfc3339", "hosts": names},
            **{LOGHOST_PER_HOST.format(host=n): {"format": "bsd", "hosts": [n]} for n in names},
            LOGHOST_JOURNAL_DIR + "/remote-{host}.journal": {
                "format": "journal", "hosts": "one file per host, _HOSTNAME=<host>",
                "built_from": LOGHOST_COMBINED_ISO + " split by HOSTNAME "
                              "(systemd-journal-remote)",
                "written": journal},
        },
    }


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Fate:
    recipient: str
    fate: str
    at: str
    path: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    sender: str
    recipients: tuple[str, ...]
    # "smtp" (swaks), "dialogue" (the lab's own SMTP client, exact MAIL FROM and RCPT TO
    # arguments, optionally with SMTPUTF8) or "pickup" (sendmail on entry_host)
    method: str
    entry_host: str
    client: str = ""
    subject: str = "lab message"
    dsn_success: bool = False
    fates: tuple[Fate, ...] = ()
    notifications: tuple[dict[str, str], ...] = ()
    deferred_at_out1: int = 0
    smtputf8: bool = False


def _scenarios(quick: bool) -> tuple[Scenario, ...]:
    t = DOMAIN
    inbound = ("mx1", "filter1", "mbox1")
    outbound = ("mx1", "filter1", "out1")
    back_in = ("out1", "mx1", "filter1", "mbox1")
    if quick:
        out_fate, out_detail = "deferred", "next hop 127.0.0.9:2599 refuses connections"
        out_notes: tuple[dict[str, str], ...] = ()
    else:
        out_fate = "expired"
        out_detail = "deferred (nobody listens on 127.0.0.9:2599), then expired, returned to sender"
        out_notes = ()

    def expiry_notes(sender: str) -> tuple[dict[str, str], ...]:
        if quick:
            return out_notes
        return (
            {"kind": "delay", "generated_at": "out1", "to": sender, "fate": "delivered",
             "at": "mbox1", "path": ",".join(back_in)},
            {"kind": "non-delivery", "generated_at": "out1", "to": sender, "fate": "delivered",
             "at": "mbox1", "path": ",".join(back_in)},
        )

    return (
        Scenario("single", "one recipient from outside, delivered through the whole chain",
                 "sender@example.org", (f"alice@{t}",), "smtp", "mx1", "ext",
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound,
                             "virtual mailbox delivery"),)),
        Scenario("multi_split", "four recipients, split at filter1 to mbox1 and out1",
                 f"alice@{t}", (f"bob@{t}", f"carol@{t}", "dave@example.net",
                                "erin@example.net"), "smtp", "mx1", "ws1",
                 fates=(Fate(f"bob@{t}", "delivered", "mbox1", inbound, "mailbox"),
                        Fate(f"carol@{t}", "delivered", "mbox1", inbound, "mailbox"),
                        Fate("dave@example.net", out_fate, "out1", outbound, out_detail),
                        Fate("erin@example.net", out_fate, "out1", outbound, out_detail)),
                 notifications=expiry_notes(f"alice@{t}"), deferred_at_out1=1),
        Scenario("unknown_user", "unknown user: mbox1 refuses at RCPT, filter1 bounces and "
                 "returns a DSN to the (internal) sender", f"carol@{t}", (f"nosuchuser@{t}",),
                 "smtp", "mx1", "ws1",
                 fates=(Fate(f"nosuchuser@{t}", "bounced", "filter1", inbound,
                             "mbox1 answers 550 5.1.1 user unknown at RCPT"),),
                 notifications=({"kind": "non-delivery", "generated_at": "filter1",
                                 "to": f"carol@{t}", "fate": "delivered", "at": "mbox1",
                                 "path": "filter1,mbox1"},)),
        Scenario("unknown_user_external_sender", "unknown user, sender outside: the DSN "
                 "itself goes out through out1 and cannot be delivered",
                 "stranger@example.net", (f"ghost@{t}",), "smtp", "mx1", "ext",
                 fates=(Fate(f"ghost@{t}", "bounced", "filter1", inbound,
                             "mbox1 answers 550 5.1.1 user unknown at RCPT"),),
                 notifications=({"kind": "non-delivery", "generated_at": "filter1",
                                 "to": "stranger@example.net", "fate": out_fate, "at": "out1",
                                 "path": "filter1,out1"},)
                 + (() if quick else ({"kind": "postmaster non-delivery (double bounce)",
                                       "generated_at": "out1", "to": f"postmaster@{t}",
                                       "fate": "delivered", "at": "mbox1",
                                       "path": ",".join(back_in)},)),
                 deferred_at_out1=1),
        Scenario("client_reject", "client address refused by mx1 (NOQUEUE reject at RCPT)",
                 "spam@example.org", (f"alice@{t}",), "smtp", "mx1", "bad",
                 fates=(Fate(f"alice@{t}", "rejected", "mx1", ("mx1",),
                             "NOQUEUE: 554 client host rejected by check_client_access"),)),
        Scenario("rcpt_reject", "recipient refused by mx1's access map (NOQUEUE)",
                 "sender@example.org", (f"blocked@{t}",), "smtp", "mx1", "ext",
                 fates=(Fate(f"blocked@{t}", "rejected", "mx1", ("mx1",),
                             "NOQUEUE: 554 recipient address rejected by check_recipient_access"),)),
        Scenario("relay_denied", "outside client tries to relay to an outside domain",
                 "sender@example.org", ("victim@example.net",), "smtp", "mx1", "ext",
                 fates=(Fate("victim@example.net", "rejected", "mx1", ("mx1",),
                             "NOQUEUE: 454 relay access denied"),)),
        Scenario("reject_with_queue_id", "first recipient accepted, second refused: the reject "
                 "is logged with the queue ID", "sender@example.org",
                 (f"alice@{t}", f"blocked@{t}"), "smtp", "mx1", "ext",
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound, "mailbox"),
                        Fate(f"blocked@{t}", "rejected", "mx1", ("mx1",),
                             "554 recipient address rejected, logged with the queue ID"))),
        Scenario("cleanup_reject", "filter1's header_checks reject the Subject at end of DATA; "
                 "mx1 bounces", f"alice@{t}", (f"bob@{t}",), "smtp", "mx1", "ws1",
                 subject="FORBIDDEN offer",
                 fates=(Fate(f"bob@{t}", "bounced", "mx1", ("mx1", "filter1"),
                             "filter1 cleanup rejects (header_checks), 550 after DATA"),),
                 notifications=({"kind": "non-delivery", "generated_at": "mx1",
                                 "to": f"alice@{t}", "fate": "delivered", "at": "mbox1",
                                 "path": "mx1,filter1,mbox1"},)),
        Scenario("pickup_local", "local submission with sendmail(1) on mx1 (pickup)",
                 f"root@mx1.{t}", (f"alice@{t}",), "pickup", "mx1",
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound, "mailbox"),)),
        Scenario("alias_forward", "local alias on mbox1: fwd -> bob (forwarded as a new ID)",
                 "sender@example.org", (f"fwd@mbox1.{t}",), "smtp", "mx1", "ext",
                 fates=(Fate(f"fwd@mbox1.{t}", "forwarded", "mbox1", inbound,
                             f"alias fwd: bob@{t}; the new queue ID is delivered to bob's "
                             "mailbox"),)),
        Scenario("alias_root_pickup", "cron-style mail to root on mbox1 (pickup), aliased to "
                 "postmaster", f"root@mbox1.{t}", ("root",), "pickup", "mbox1",
                 fates=(Fate("root", "forwarded", "mbox1", ("mbox1",),
                             f"alias root: postmaster@{t}; delivered to postmaster's mailbox"),)),
        Scenario("deferred_outbound", "internal sender to an outside domain: out1's next hop "
                 "is unreachable", f"bob@{t}", ("partner@example.net",), "smtp", "mx1", "ws1",
                 fates=(Fate("partner@example.net", out_fate, "out1", outbound, out_detail),),
                 notifications=expiry_notes(f"bob@{t}"), deferred_at_out1=1),
        Scenario("dsn_success", "DSN NOTIFY=SUCCESS requested with sendmail -N on mx1; mbox1 "
                 "returns a delivery status notification", f"carol@{t}", (f"alice@{t}",),
                 "pickup", "mx1", dsn_success=True,
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound, "mailbox"),),
                 notifications=({"kind": "success", "generated_at": "mbox1",
                                 "to": f"carol@{t}", "fate": "delivered", "at": "mbox1",
                                 "path": "mbox1"},)),
        Scenario("discard", "mbox1's transport map discards one address", f"alice@{t}",
                 (f"devnull@{t}",), "smtp", "mx1", "ws1",
                 fates=(Fate(f"devnull@{t}", "discarded", "mbox1", inbound,
                             "transport discard:silently"),)),
    )


def _hostile_scenarios(quick: bool) -> tuple[Scenario, ...]:
    """Sessions a hostile SMTP client can open: forged log fields and bidi controls.

    Every address is sent exactly as written here (the lab's own SMTP client, no quoting or
    parsing in between); what Postfix makes of it is what the logs show. Nothing leaves
    example.test, so quick and full mode send the same.
    """
    del quick
    t = DOMAIN
    inbound = ("mx1", "filter1", "mbox1")
    forged = f"{FORGED_LOCALPART}@evil.example"
    # Unquoted: Postfix requotes a logged address only where RFC 5322 needs it, and UTF-8 text
    # needs none, so '"\u202egnp.exe"@...' would be logged without its quotes and what was
    # sent would differ from what the logs hold.
    bidi_sender = f"{RLO}gnp.exe@evil.example"
    bidi_rcpt = f"{BIDI_MAILBOX[0]}@{t}"
    return (
        Scenario("injected_reject", "outside client relays to a quoted local part that "
                 "carries a forged '; from=<...> to=<...>' trailer: NOQUEUE relay reject",
                 "mallory@evil.example", (forged,), "dialogue", "mx1", "ext",
                 fates=(Fate(forged, "rejected", "mx1", ("mx1",),
                             "NOQUEUE: 454 relay access denied; the forged fields are inside "
                             "the quoted recipient"),)),
        Scenario("forged_sender", "MAIL FROM is a quoted local part that carries forged "
                 "from=<...> to=<...> fields; accepted and delivered", forged,
                 (f"alice@{t}",), "dialogue", "mx1", "ext",
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound, "mailbox"),)),
        Scenario("bidi_address", "SMTPUTF8 sender and recipient with U+202E (RIGHT-TO-LEFT "
                 "OVERRIDE) in the local part; delivered", bidi_sender, (bidi_rcpt,),
                 "dialogue", "mx1", "ext", smtputf8=True,
                 fates=(Fate(bidi_rcpt, "delivered", "mbox1", inbound,
                             f"virtual mailbox {BIDI_MAILBOX[1]}"),)),
    )


def _filters_scenarios(quick: bool) -> tuple[Scenario, ...]:
    """The filters chain (see ``_filters_main_cf``): what content filters make Postfix log.

    Nothing leaves example.test, so quick and full mode send the same.
    """
    del quick
    t = DOMAIN
    inbound = ("mx1", "filter1", "mbox1")
    return (
        Scenario("filtered_inbound", "outside sender to alice: passes mx1's before-queue proxy "
                 "and filter1's content filter, which answers without `queued as`",
                 "sender@example.org", (f"alice@{t}",), "smtp", "mx1", "ext",
                 subject="Quarterly report",
                 fates=(Fate(f"alice@{t}", "delivered", "mbox1", inbound, "mailbox"),)),
        Scenario("filtered_split", "internal sender to two mailboxes; filter1's header_checks "
                 "WARN on the Subject", f"alice@{t}", (f"bob@{t}", f"carol@{t}"), "smtp",
                 "mx1", "ws1", subject="URGENT: budget review",
                 fates=(Fate(f"bob@{t}", "delivered", "mbox1", inbound, "mailbox"),
                        Fate(f"carol@{t}", "delivered", "mbox1", inbound, "mailbox"))),
        Scenario("proxy_reject", "the before-queue proxy refuses the message at the end of "
                 "DATA (554 5.7.1)", "spammer@example.org", (f"alice@{t}",), "smtp", "mx1",
                 "ext", subject=f"{filter_servers.PROXY_REFUSE_WORD} offer",
                 fates=(Fate(f"alice@{t}", "rejected", "mx1", ("mx1",),
                             "proxy-reject: END-OF-MESSAGE: " + filter_servers.PROXY_REPLY),)),
        Scenario("vrfy_unknown", "an outside client VRFYs an unknown user (HELO, no MAIL "
                 "FROM): mx1 refuses it, no sender in the trailer", "",
                 (f"nosuchuser@{t}",), "vrfy", "mx1", "ext",
                 fates=(Fate(f"nosuchuser@{t}", "rejected", "mx1", ("mx1",),
                             "NOQUEUE: reject: VRFY 550 5.1.1 user unknown in relay "
                             "recipient table"),)),
        Scenario("hostile_subject", "a Subject written to break a shell and a terminal",
                 "sender@example.org", (f"carol@{t}",), "smtp", "mx1", "ext",
                 subject=HOSTILE_SUBJECT,
                 fates=(Fate(f"carol@{t}", "delivered", "mbox1", inbound, "mailbox"),)),
    )


# A Subject with what a shell or grep would read as syntax; sent and logged as it is.
HOSTILE_SUBJECT = "Invoice $(id) `uname` 'Q3' \"final\" ; rm -rf ~ | -e .* [x]"

SCENARIO_SETS = {"standard": _scenarios, "hostile": _hostile_scenarios,
                 "filters": _filters_scenarios}
# The chain each set runs on (default: standard).
CHAINS = {"filters": "filters"}


def _message_id(scn: Scenario, token: str) -> str:
    return f"<{scn.name}.{token}@lab.{DOMAIN}>"


# Exit codes of the lab's SMTP client, the numbers swaks uses for the same outcomes.
DIALOGUE_EXIT = {"MAIL": 23, "RCPT": 24, "DATA": 25}


def _dialogue(scn: Scenario, msgid: str, entry: LabHost, body: str) -> int:
    """One SMTP session with the exact MAIL FROM and RCPT TO arguments; swaks-style exit code.

    smtplib's sendmail() would parse and requote the addresses (and swaks has no SMTPUTF8),
    so the commands are sent as written.
    """
    ip, name = CLIENTS[scn.client]
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    message = (f"From: <{scn.sender}>\r\nTo: {', '.join(f'<{r}>' for r in scn.recipients)}\r\n"
               f"Subject: {scn.subject}\r\nDate: {date}\r\nMessage-Id: {msgid}\r\n\r\n"
               + body.replace("\n", "\r\n"))
    with smtplib.SMTP(entry.ip, SMTP_PORT, local_hostname=name or f"[{ip}]",
                      source_address=(ip, 0), timeout=30) as smtp:
        smtp.command_encoding = "utf-8"
        smtp.ehlo()
        utf8 = " SMTPUTF8" if scn.smtputf8 else ""
        code, _ = smtp.docmd("MAIL", f"FROM:<{scn.sender}>{utf8}")
        if code != 250:
            return DIALOGUE_EXIT["MAIL"]
        accepted = [r for r in scn.recipients
                    if smtp.docmd("RCPT", f"TO:<{r}>")[0] in (250, 251)]
        if not accepted:
            return DIALOGUE_EXIT["RCPT"]
        code, _ = smtp.data(message.encode())
        return 0 if code == 250 else DIALOGUE_EXIT["DATA"]


def _vrfy(scn: Scenario, entry: LabHost) -> int:
    """HELO, then VRFY each recipient, no mail: 0 when every VRFY was refused with 5xx."""
    ip, name = CLIENTS[scn.client]
    with smtplib.SMTP(entry.ip, SMTP_PORT, local_hostname=name or f"[{ip}]",
                      source_address=(ip, 0), timeout=30) as smtp:
        smtp.helo()
        codes = [smtp.docmd("VRFY", r)[0] for r in scn.recipients]
    return 0 if all(500 <= c < 600 for c in codes) else DIALOGUE_EXIT["RCPT"]


def _send(scn: Scenario, msgid: str, hosts: dict[str, LabHost]) -> int:
    entry = hosts[scn.entry_host]
    body = f"Scenario {scn.name}: {scn.description}\n"
    if scn.method == "vrfy":
        return _vrfy(scn, entry)
    if scn.method == "dialogue":
        return _dialogue(scn, msgid, entry, body)
    if scn.method == "smtp":
        ip, name = CLIENTS[scn.client]
        args = ["swaks", "--server", f"{entry.ip}:{SMTP_PORT}", "--local-interface", ip,
                "--ehlo", name or f"[{ip}]", "--from", scn.sender,
                "--to", ",".join(scn.recipients), "--header", f"Message-Id: {msgid}",
                "--header", f"Subject: {scn.subject}", "--body", body, "--timeout", "30",
                "--hide-all"]
        return _run(args, check=False).returncode
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    message = (f"From: {scn.sender}\nTo: {', '.join(scn.recipients)}\nSubject: {scn.subject}\n"
               f"Date: {date}\nMessage-ID: {msgid}\n\n{body}")
    args = ["sendmail", "-C", str(entry.config_dir), "-f", scn.sender]
    if scn.dsn_success:
        args += ["-N", "success"]
    return _run([*args, "--", *scn.recipients], stdin=message).returncode


# --------------------------------------------------------------------------- settling


def _queue(host: LabHost) -> list[dict[str, object]]:
    out = _run(["postqueue", "-c", str(host.config_dir), "-j"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _settled(hosts: Sequence[LabHost], deferred_at_out1: int) -> bool:
    for host in hosts:
        queue = _queue(host)
        if host.name != "out1":
            if queue:
                return False
        elif len(queue) != deferred_at_out1 or any(
                entry.get("queue_name") != "deferred" for entry in queue):
            return False
    return True


def wait_until_settled(hosts: Sequence[LabHost], deferred_at_out1: int, timeout: float,
                       flush_out1: bool = False) -> float:
    """Wait until every queue holds exactly what the scenarios leave there; returns seconds."""
    start = time.monotonic()
    stable = 0
    last_flush = start
    while True:
        if flush_out1 and time.monotonic() - last_flush > 15:
            _run(["postqueue", "-c", "/etc/postfix-out1", "-f"], check=False)
            last_flush = time.monotonic()
        # Two consecutive settled polls: a message can sit between two hosts for an instant.
        stable = stable + 1 if _settled(hosts, deferred_at_out1) else 0
        if stable >= 2:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            summary = {h.name: len(_queue(h)) for h in hosts}
            raise LabError(f"queues did not settle within {timeout:.0f}s: {summary}")
        time.sleep(1)


# --------------------------------------------------------------------------- output


@dataclass(frozen=True, slots=True)
class LabResult:
    out: Path
    expected: Path
    host_roots: dict[str, Path]
    logs: dict[str, Path] = field(default_factory=dict)
    # Wall-clock seconds per phase: teardown of a previous run, build, send, settle, collect
    # (and in central mode drain: stopping the instances and waiting for the log host).
    phases: dict[str, float] = field(default_factory=dict)
    # Central mode: the log host's files under out/loghost, by path relative to that root.
    loghost: dict[str, Path] = field(default_factory=dict)


def _copy_outputs(out: Path, hosts: Sequence[LabHost]) -> tuple[dict[str, Path], dict[str, Path],
                                                                  dict[str, float]]:
    roots: dict[str, Path] = {}
    logs: dict[str, Path] = {}
    mtimes: dict[str, float] = {}
    for host in hosts:
        root = out / host.name
        etc = root / "etc" / "postfix"
        etc.mkdir(parents=True, exist_ok=True)
        for fname in ("main.cf", "master.cf"):
            shutil.copy2(host.config_dir / fname, etc / fname)
        dest = root / host.log_path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host.live_log, dest)
        roots[host.name] = root
        logs[host.name] = dest
        mtimes[str(dest.relative_to(out))] = os.stat(host.live_log).st_mtime
        write_host_manifest(root, host.name, host.log_path, mtimes[str(dest.relative_to(out))])
    return roots, logs, mtimes


def write_host_manifest(root: Path, name: str, log_path: str, mtime: float) -> None:
    """``collector-manifest.json``: the log's original mtime, so collector places year-less
    stamps right when it reads the directory as a host (git keeps no mtimes)."""
    size = (root / log_path.lstrip("/")).stat().st_size
    manifest = {"host": name, "files": {log_path: {"mtime": mtime, "size": size}}}
    (root / "collector-manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _expected(hosts: Sequence[LabHost], sent: list[dict[str, object]], quick: bool,
              started: datetime, finished: datetime, scenario_set: str,
              central: bool = False) -> dict[str, object]:
    version = _run(["postconf", "-c", str(hosts[0].config_dir), "-h", "mail_version"]).stdout
    return {
        "lab": {
            "mode": "quick" if quick else "full",
            "scenario_set": scenario_set,
            "postfix_version": version.strip(),
            "local_timezone": time.strftime("%Z %z"),
            "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            **({"central": True} if central else {}),
        },
        "hosts": {
            h.name: {
                "fqdn": h.fqdn, "ip": h.ip, "role": h.role, "smtp_port": SMTP_PORT,
                "instance": h.instance, "config_dir": str(h.config_dir),
                "syslog_name": h.syslog_name, "long_queue_ids": h.long_queue_ids,
                "log": {"path": h.log_path, "via": h.log_via, "format": h.log_format},
                "extra_listeners": ([f"{h.ip}:{REINJECT_PORT} (content filter reinjection)"]
                                    if h.name == "filter1" else []),
            }
            for h in hosts
        },
        "clients": {name or f"[{ip}]": ip for ip, name in CLIENTS.values()},
        "topology": {
            "edges": [
                {"from": "mx1", "to": "filter1", "for": "all accepted mail",
                 "via": f"smtp [filter1.{DOMAIN}]:{SMTP_PORT}"},
                {"from": "filter1", "to": "filter1",
                 "for": "content filter (scan service) and reinjection with XFORWARD",
                 "via": f"scan:[127.0.0.22]:{REINJECT_PORT}"},
                {"from": "filter1", "to": "mbox1", "for": f"{DOMAIN}, mbox1.{DOMAIN}",
                 "via": f"relay:[mbox1.{DOMAIN}]:{SMTP_PORT}"},
                {"from": "filter1", "to": "out1", "for": "everything else",
                 "via": f"smtp [out1.{DOMAIN}]:{SMTP_PORT}"},
                {"from": "out1", "to": "mx1", "for": f"{DOMAIN} (returned notifications)",
                 "via": f"smtp:[mx1.{DOMAIN}]:{SMTP_PORT}"},
            ],
            "unreachable_next_hop": f"{DEAD_HOP[0]}:{DEAD_HOP[1]} (out1's relayhost)",
        },
        "scenarios": sent,
    }


SUBMISSION = {"smtp": "swaks (SMTP)", "pickup": "sendmail (pickup)",
              "vrfy": "lab SMTP client (HELO and VRFY only, no message)",
              "dialogue": "lab SMTP client (exact MAIL FROM/RCPT TO)"}


def _scenario_record(scn: Scenario, msgid: str, exit_code: int, sent_at: datetime
                     ) -> dict[str, object]:
    return {
        "name": scn.name, "description": scn.description, "message_id": msgid,
        "sender": scn.sender, "recipients": list(scn.recipients), "subject": scn.subject,
        "submitted": {"method": SUBMISSION[scn.method],
                      "host": scn.entry_host,
                      "client_ip": CLIENTS[scn.client][0] if scn.client else None,
                      "at": sent_at.isoformat(timespec="seconds"),
                      "submitter_exit_code": exit_code},
        "dsn_notify": "SUCCESS" if scn.dsn_success else None,
        **({"smtputf8": True} if scn.smtputf8 else {}),
        "fates": [{"recipient": f.recipient, "fate": f.fate, "at": f.at, "path": list(f.path),
                   "detail": f.detail} for f in scn.fates],
        "notifications": [dict(n) for n in scn.notifications],
    }


# --------------------------------------------------------------------------- entry points


@contextlib.contextmanager
def _lab_lock(timeout: float = 900) -> Iterator[None]:
    """One lab per machine: a second run (say, a parallel test session) waits for the first."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another lab run holds {LOCK_FILE}") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab must run as root")
    missing = [p for p in ("postfix", "postmulti", "postconf", "swaks", "sendmail")
               if shutil.which(p) is None]
    if missing:
        raise LabError(f"missing programs: {', '.join(missing)} (install postfix and swaks)")


def run_lab(out: Path, quick: bool = True, keep_running: bool = False,
            syslog: bool | None = None, scenario_set: str = "standard",
            central: bool = False, journal: bool = True,
            on_chain_up: Callable[[tuple[LabHost, ...]], None] | None = None) -> LabResult:
    """Build the chain, send every scenario, wait, and write the host roots and ground truth.

    syslog=None uses the private rsyslogd for filter1 and mbox1 when /dev/log is free. Runs on
    one machine are serialized by a lock file; with keep_running the lock is released on return,
    so the next run (or ``stop``) removes the instances left running. scenario_set names one of
    SCENARIO_SETS: the chain is the same, only the mail sent differs.

    central=True: every host logs through syslog and the lab's rsyslogd also forwards it all to
    a second rsyslogd, the log host, whose files go to out/loghost; journal=False leaves out the
    log host's journal files (8 MB each; the committed fixture has none).

    on_chain_up(hosts) runs once every instance is up, before the first scenario is sent
    (a test that follows the live logs starts then; each host's ``live_log`` exists).
    """
    if central and (syslog is False or keep_running):
        raise LabError("central mode logs through syslog and stops the instances to drain "
                       "their logs (no --no-syslog, no --keep-running)")
    if scenario_set not in SCENARIO_SETS:
        raise LabError(f"unknown scenario set {scenario_set!r} "
                       f"(one of {', '.join(SCENARIO_SETS)})")
    _check_prerequisites()
    with _lab_lock():
        return _run_lab_locked(Path(out), quick, keep_running, syslog, scenario_set,
                               central, journal, on_chain_up)


def _clear_outputs(out: Path, central: bool = False) -> None:
    """Remove what a previous run wrote to out, and nothing else.

    The hostile set's fixtures live in a subdirectory of the standard set's, so a standard
    regeneration must not remove the whole directory.
    """
    for name in ALL_HOST_NAMES:
        shutil.rmtree(out / name, ignore_errors=True)
    for fname in ("expected.json", "mtimes.json"):
        (out / fname).unlink(missing_ok=True)
    if central:
        shutil.rmtree(out / "loghost", ignore_errors=True)


def _run_lab_locked(out: Path, quick: bool, keep_running: bool, syslog: bool | None,
                    scenario_set: str, central: bool = False, journal: bool = True,
                    on_chain_up: Callable[[tuple[LabHost, ...]], None] | None = None,
                    ) -> LabResult:
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(now - mark, 1)
        mark = now

    with_syslog = _syslog_wanted() if syslog is None else syslog
    chain = CHAINS.get(scenario_set, "standard")
    stop_lab()
    phase("cleanup")
    if central and not _syslog_wanted():
        raise LabError("central mode needs rsyslogd and a free /dev/log")
    central_port = _free_port() if central else None
    ok = False
    filters: list[Any] = []
    try:
        started = datetime.now().astimezone()
        if chain == "filters":
            filters = _start_filters()
        hosts = build_hosts(quick, with_syslog, central_port, chain)
        phase("build")
        if on_chain_up is not None:
            for host in hosts:
                Path(host.live_log).touch()  # postlogd and rsyslogd append to it
            on_chain_up(hosts)
            phase("chain_up")
        by_name = {h.name: h for h in hosts}
        token = started.strftime("%Y%m%d%H%M%S")
        sent: list[dict[str, object]] = []
        scenarios = SCENARIO_SETS[scenario_set](quick)
        for scn in scenarios:
            msgid = _message_id(scn, token)
            sent_at = datetime.now().astimezone()
            code = _send(scn, msgid, by_name)
            sent.append(_scenario_record(scn, msgid, code, sent_at))
        phase("send")
        if quick:
            wait_until_settled(hosts, sum(s.deferred_at_out1 for s in scenarios), timeout=50)
        else:
            wait_until_settled(hosts, 0, timeout=600, flush_out1=True)
        time.sleep(1)  # let the last log lines reach the files
        phase("settle")
        if central_port is not None:
            drain_to_loghost(hosts)
            phase("drain")
        _clear_outputs(out, central)
        out.mkdir(parents=True, exist_ok=True)
        roots, logs, mtimes = _copy_outputs(out, hosts)
        loghost: dict[str, Path] = {}
        if central_port is not None:
            loghost = _copy_loghost(out, central_port, journal, mtimes)
        finished = datetime.now().astimezone()
        expected = out / "expected.json"
        truth = _expected(hosts, sent, quick, started, finished, scenario_set, central)
        if central_port is not None:
            truth["loghost"] = _loghost_expected(central_port, hosts, journal)
        if chain == "filters":
            truth["topology"] = _filters_topology(truth["topology"])
        # ensure_ascii=False: the hostile set's addresses stay as the UTF-8 Postfix logs.
        expected.write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        (out / "mtimes.json").write_text(json.dumps(mtimes, indent=2, sort_keys=True) + "\n")
        ok = True
        phase("collect")
        return LabResult(out=out, expected=expected, host_roots=roots, logs=logs,
                         phases=phases, loghost=loghost)
    finally:
        if not (ok and keep_running):
            stop_lab()
        # The Python filters are threads of this process: they end with it in any case.
        for running in filters:
            if not (ok and keep_running):
                running.stop()


def _filters_topology(topology: Any) -> dict[str, object]:
    edges = [
        {"from": "mx1", "to": "mx1", "for": "every SMTP transaction (before-queue proxy, "
         "refuses Subjects with " + filter_servers.PROXY_REFUSE_WORD + ")",
         "via": f"smtpd_proxy_filter {FILTERS_PROXY[0]}:{FILTERS_PROXY[1]} -> "
                f"smtpd {FILTERS_PROXY_BACK[0]}:{FILTERS_PROXY_BACK[1]}"},
        *(e for e in topology["edges"] if e["from"] != "filter1" or e["to"] != "filter1"),
        {"from": "filter1", "to": "filter1",
         "for": "content filter answering 250 2.5.0 OK (<id>), re-injection with XFORWARD "
                "NAME/ADDR (no IDENT, no orig_queue_id=)",
         "via": f"scan:[{FILTERS_SCAN[0]}]:{FILTERS_SCAN[1]} -> "
                f"smtpd {FILTERS_REINJECT[0]}:{FILTERS_REINJECT[1]}"},
    ]
    return {**topology, "edges": edges,
            "header_checks": {"mx1": "/^Subject:/ INFO", "filter1": "/^Subject:.*URGENT/ WARN"}}


def _iter_cli(argv: Sequence[str] | None) -> Iterator[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build the chain, send the scenarios, write OUT")
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--quick", action="store_true",
                     help="do not wait for expiries (under a minute)")
    run.add_argument("--keep-running", action="store_true",
                     help="leave the instances running (stop them with the stop command)")
    run.add_argument("--no-syslog", action="store_true",
                     help="every host logs with maillog_file, no private rsyslogd")
    run.add_argument("--set", dest="scenario_set", choices=sorted(SCENARIO_SETS),
                     default="standard", help="which scenarios to send (default: standard)")
    run.add_argument("--central", action="store_true",
                     help="every host logs through syslog, forwarded to a central log host "
                          "(OUT/loghost)")
    run.add_argument("--no-journal", action="store_true",
                     help="central mode: leave out the log host's journal files (8 MB each)")
    sub.add_parser("stop", help="stop and remove everything a run created")
    args = parser.parse_args(argv)
    if args.command == "stop":
        _check_prerequisites()
        with _lab_lock():
            stop_lab()
        yield "lab stopped and removed"
        return
    result = run_lab(args.out, quick=args.quick, keep_running=args.keep_running,
                     syslog=False if args.no_syslog else None,
                     scenario_set=args.scenario_set, central=args.central,
                     journal=not args.no_journal)
    total = sum(result.phases.values())
    yield f"wrote {result.out} in {total:.1f}s {result.phases}"
    for name, path in result.logs.items():
        yield f"  {name}: {path} ({path.stat().st_size} bytes)"
    for path in result.loghost.values():
        yield f"  loghost: {path} ({path.stat().st_size} bytes)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        for line in _iter_cli(argv):
            print(line)
    except LabError as exc:
        print(f"postfix_lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
